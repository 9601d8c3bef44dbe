"""A18 modules/cmd_args.py: the flags an extension reads (line numbers in the host doc section 3.3)."""

import argparse

from modules.paths_internal import data_path, models_path

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", type=str, default=data_path)
parser.add_argument("--skip-install", action="store_true")
parser.add_argument("--no-half", action="store_true")
parser.add_argument("--use-cpu", nargs="+", default=[])
parser.add_argument("--listen", action="store_true")
parser.add_argument("--port", type=int, default=None)
parser.add_argument("--gradio-auth", type=str, default=None)
parser.add_argument("--gradio-allowed-path", action="append", default=[data_path])
parser.add_argument("--disable-safe-unpickle", action="store_true")
parser.add_argument("--api", action="store_true")
parser.add_argument("--api-auth", type=str, default=None)
parser.add_argument("--nowebui", action="store_true")
parser.add_argument("--hide-ui-dir-config", action="store_true")
parser.add_argument("--gfpgan-models-path", type=str, default=f"{models_path}/GFPGAN")
