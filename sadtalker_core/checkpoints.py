"""Find, read and strictly load the official SadTalker checkpoint files.

Which file feeds which network (``locate_checkpoints``), following the official ``init_path`` rules:

* ``SadTalker_V0.0.2_<size>.safetensors`` holds five networks under the key prefixes ``face_3drecon``,
  ``audio2exp``, ``audio2pose``, ``kp_extractor`` and ``generator`` (keys are split on the first ``.``);
* ``mapping_00229-model.pth.tar`` (MappingNet, 70 channels) serves crop/extcrop/resize,
  ``mapping_00109-model.pth.tar`` (73 channels) serves full/extfull; both modes read the entry ``mapping``;
* the old set (``old_version=True``): ``epoch_20.pth`` [net_recon], ``auido2exp_00300-model.pth`` [model],
  ``auido2pose_00140-model.pth`` [model], ``facevid2vid_00189-model.pth.tar`` [generator, kp_detector,
  he_estimator]; it exists for 256 only.
* When the safetensors file for size 256 is missing but the old set is complete, the old set is used (same
  networks, no download needed; ``CheckpointSet.note`` says so). For 512 there is no such fallback: the old
  set has no 512 renderer. The official code instead fails when it finds the other size's safetensors.

Pickles are read with ``torch.load(weights_only=True)``: a file that needs to run code while loading is refused,
never executed. Safetensors files are header-checked (truncation, damage) and only the needed prefixes read.
Unknown top-level entries (optimizer, discriminator, epoch ...) are ignored.

Command line: ``python -m sadtalker_core verify|download [--dir DIR]`` (also ``python -m sadtalker_core.checkpoints``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .download import OFFICIAL_FILES, Progress, ensure_checkpoints, how_to_get, verify_checkpoints
from .errors import (CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, CorruptCheckpointError,
                     OptionError)
from .progress import TerminalBar

if TYPE_CHECKING:
    import torch

SIZES = (256, 512)
PREPROCESS_MODES = ("crop", "extcrop", "resize", "full", "extfull")
CHECKPOINTS_ENV = "SADTALKER_CHECKPOINTS"

#: MappingNet file -> its input channels (70 = exp 64 + pose 6; 73 adds crop scale and offsets).
MAPPING_FILES = {"mapping_00229-model.pth.tar": 70, "mapping_00109-model.pth.tar": 73}
OLD_SET = ("epoch_20.pth", "auido2exp_00300-model.pth", "auido2pose_00140-model.pth",
           "facevid2vid_00189-model.pth.tar")

_SAFETENSORS_SECTIONS = {"face_recon": "face_3drecon", "expnet": "audio2exp", "posevae": "audio2pose",
                         "kp_detector": "kp_extractor", "generator": "generator"}

#: official file -> {network: section}. A section is a key prefix (up to the first '.') in a safetensors file
#: and a top-level entry in a pickle.
FILE_SECTIONS: dict[str, dict[str, str]] = {
    **{f"SadTalker_V0.0.2_{size}.safetensors": _SAFETENSORS_SECTIONS for size in SIZES},
    **{name: {"mapping_net": "mapping"} for name in MAPPING_FILES},
    "epoch_20.pth": {"face_recon": "net_recon"},
    "auido2exp_00300-model.pth": {"expnet": "model"},
    "auido2pose_00140-model.pth": {"posevae": "model"},
    "facevid2vid_00189-model.pth.tar": {"generator": "generator", "kp_detector": "kp_detector",
                                        "he_estimator": "he_estimator"},
}

#: network -> (module in sadtalker_core.nets, class name)
NETWORK_CLASSES = {
    "face_recon": ("face_recon", "FaceReconNet"),
    "expnet": ("expnet", "ExpNet"),
    "posevae": ("posevae", "PoseVAE"),
    "kp_detector": ("kp_detector", "KPDetector"),
    "generator": ("generator", "SPADEGenerator"),
    "mapping_net": ("mapping_net", "MappingNet"),
    "he_estimator": ("he_estimator", "HEEstimator"),
}

_LIST_AT_MOST = 8
_LFS_POINTER = b"version https://git-lfs"


def safetensors_name(size: int) -> str:
    return f"SadTalker_V0.0.2_{size}.safetensors"


def mapping_name(preprocess: str) -> str:
    """The MappingNet file the official code uses for a preprocess mode."""
    coeff_nc = 73 if "full" in preprocess else 70
    return next(name for name, nc in MAPPING_FILES.items() if nc == coeff_nc)


# ----------------------------------------------------------------------------------------------- locate

@dataclass(frozen=True)
class CheckpointSource:
    """One network's weights: a file and the section inside it."""

    path: Path
    section: str

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix == ".safetensors"

    def __str__(self) -> str:
        return f"{self.path} [{self.section}{'.*' if self.is_safetensors else ''}]"


@dataclass(frozen=True)
class CheckpointSet:
    """Which file feeds which network, for one (size, preprocess, old_version) choice."""

    sources: Mapping[str, CheckpointSource]
    size: int
    preprocess: str
    coeff_nc: int
    old_version: bool
    note: str = ""
    folders: tuple[Path, ...] = field(default=())

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(s.path for s in self.sources.values()))


def default_checkpoint_dir() -> Path:
    """``$SADTALKER_CHECKPOINTS`` when set (the official WebUI extension's variable), else ``./checkpoints``."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or "checkpoints")


def locate_checkpoints(checkpoint_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                       size: int = 256, preprocess: str = "crop", old_version: bool = False,
                       download: bool = False, progress: Progress | None = None) -> CheckpointSet:
    """Pick the official files for these settings; ``checkpoint_dir`` may list several folders (searched in
    order, per file). With ``download=True`` missing files are fetched into the first folder.

    Raises ``CheckpointNotFoundError`` naming the missing files, the folders searched and the URLs.
    """
    folders = _folders(checkpoint_dir)
    if size not in SIZES:
        raise OptionError(f"size must be one of {SIZES}, got {size!r}", option="size",
                          problem=f"got {size!r}, expected one of {', '.join(map(str, SIZES))}.")
    if preprocess not in PREPROCESS_MODES:
        raise OptionError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}",
                          option="preprocess",
                          problem=f"got {preprocess!r}, expected one of {', '.join(PREPROCESS_MODES)}.")
    if old_version and size != 256:
        problem = (f"the old-version checkpoints hold only 256 renderer weights: use 256, or the new checkpoint "
                   f"set ({safetensors_name(512)}).")
        raise OptionError(f"size: {problem}", option="size", problem=problem)

    def find(name: str) -> Path | None:
        return next((f / name for f in folders if (f / name).is_file()), None)

    mapping = mapping_name(preprocess)
    note = ""
    use_old = old_version
    if not old_version and find(safetensors_name(size)) is None and size == 256 and all(map(find, OLD_SET)):
        use_old = True
        note = f"{safetensors_name(size)} not found; using the old-version files, which hold the same networks"
    wanted = (*OLD_SET, mapping) if use_old else (safetensors_name(size), mapping)

    missing = [name for name in wanted if find(name) is None]
    if missing and download:
        ensure_checkpoints(folders[0], missing, progress)
    elif missing:
        raise CheckpointNotFoundError(_missing_message(missing, folders, old_version))

    sources = {network: CheckpointSource(find(name), section)
               for name in wanted for network, section in FILE_SECTIONS[name].items()}
    return CheckpointSet(sources, size, preprocess, MAPPING_FILES[mapping], use_old, note, folders)


def _folders(checkpoint_dir) -> tuple[Path, ...]:
    if checkpoint_dir is None:
        return (default_checkpoint_dir(),)
    if isinstance(checkpoint_dir, (str, os.PathLike)):
        return (Path(checkpoint_dir),)
    folders = tuple(Path(d) for d in checkpoint_dir)
    if not folders:
        raise OptionError("checkpoint_dir is an empty list of folders")
    return folders


def _missing_message(missing: list[str], folders: tuple[Path, ...], old_version: bool) -> str:
    searched = ", ".join(str(f.resolve()) for f in folders)
    text = (f"Missing SadTalker checkpoint files: {', '.join(missing)}.\nSearched: {searched}.\n"
            f"Download them into {folders[0].resolve()} (or run `python -m sadtalker_core download --dir "
            f"{folders[0]}`):\n{how_to_get(missing)}")
    if not old_version:
        text += (f"\nThe old-version files ({', '.join(OLD_SET)}, release v0.0.2) are optional; "
                 "the SadTalker_V0.0.2_<size>.safetensors file replaces them.")
    return text


# ------------------------------------------------------------------------------------------------- read

def load_network_states(checkpoint_set: CheckpointSet, names: Iterable[str] | None = None
                        ) -> dict[str, dict[str, torch.Tensor]]:
    """The state dict of each network (default: every network of the set), each file read once.

    Keys are relative to the network (no file prefix). Nothing is checked against a module here; see
    ``load_strict``.
    """
    names = list(checkpoint_set.sources) if names is None else list(names)
    unknown = [n for n in names if n not in checkpoint_set.sources]
    if unknown:
        raise CheckpointError(f"this checkpoint set has no {', '.join(unknown)}; it provides "
                              f"{', '.join(checkpoint_set.sources)}")
    by_file: dict[Path, dict[str, str]] = {}
    for name in names:
        source = checkpoint_set.sources[name]
        by_file.setdefault(source.path, {})[name] = source.section
    states = {}
    for path, sections in by_file.items():
        reader = read_safetensors_sections if path.suffix == ".safetensors" else read_pickle_sections
        found = reader(path, sorted(set(sections.values())))
        states.update({name: found[section] for name, section in sections.items()})
    return {name: states[name] for name in names}


def read_safetensors_sections(path: str | os.PathLike, prefixes: Sequence[str]
                              ) -> dict[str, dict[str, torch.Tensor]]:
    """{prefix: state dict without the prefix} for keys whose part before the first '.' is a wanted prefix;
    no other tensor is read from disk."""
    from safetensors import safe_open

    path = Path(path)
    header = _safetensors_header(path)
    wanted = {p: [] for p in prefixes}
    for key in header:
        head, dot, _ = key.partition(".")
        if dot and head in wanted:
            wanted[head].append(key)
    empty = [p for p, keys in wanted.items() if not keys]
    if empty:
        present = sorted({k.partition(".")[0] for k in header if k != "__metadata__"})
        raise CheckpointMismatchError(
            f"{path} has no tensors under {', '.join(p + '.' for p in empty)} (it holds "
            f"{', '.join(present) or 'no tensors'}): it is not an official SadTalker file. "
            f"{_redownload_hint(path)}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {p: {k[len(p) + 1:]: f.get_tensor(k) for k in keys} for p, keys in wanted.items()}
    except Exception as error:  # the reader's own error types differ between safetensors versions
        raise _corrupt(path, f"reading its tensors failed ({error})") from error


def _safetensors_header(path: Path) -> dict:
    """The parsed JSON header, after the structural checks that give a clear message for a damaged file."""
    size = path.stat().st_size
    _reject_lfs_pointer(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, f"it is only {size} bytes, too small to hold a safetensors header")
        header_len = int.from_bytes(prefix, "little")
        if header_len > size - 8:
            raise _corrupt(path, f"its header claims {header_len} bytes but the whole file has {size}")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    data_end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _corrupt(path, f"the header entry {key!r} has no valid data offsets")
        data_end = max(data_end, offsets[1])
    described = 8 + header_len + data_end
    if described > size:
        raise _corrupt(path, f"the data is truncated: the header describes {described} bytes, the file has {size}")
    if described < size:
        raise _corrupt(path, f"it has {size - described} bytes after the {described} its header describes")
    return header


def torch_load_weights(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU, whatever a host did to ``torch.load``.

    A1111 and SD.Next replace ``torch.load`` with their own whitelist unpickler, which returns ``None`` (no
    exception) for the archive members a current torch writes (``.format_version``, ``byteorder``,
    ``.data/serialization_id``), and other hosts may disable weights-only loading. ``torch.serialization.load``
    is torch's own function, left alone by those patches, and ``weights_only=True`` given explicitly is
    honoured even under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``.
    """
    import torch.serialization

    return torch.serialization.load(str(path), map_location="cpu", weights_only=True)


def read_pickle_sections(path: str | os.PathLike, sections: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """{entry: state dict} for the wanted top-level entries of a ``torch.save`` dict, loaded with
    ``weights_only=True``; other entries are dropped."""
    import torch

    path = Path(path)
    _reject_lfs_pointer(path)
    try:
        checkpoint = torch_load_weights(path)
    except pickle.UnpicklingError as error:
        refused = _refused_global(error)
        if refused:
            raise CorruptCheckpointError(
                f"{path} asks to run Python code while loading (it references {refused}). SadTalker refuses to "
                f"execute code from checkpoint files, so it was not loaded. Official checkpoints hold only "
                f"tensors: delete this file and download the official one again{_from_url(path)}.") from None
        raise _corrupt(path, f"it cannot be read as a PyTorch checkpoint ({_wo_reason(error)})") from error
    except Exception as error:  # torch reports damaged archives as RuntimeError, EOFError, KeyError ...
        raise _corrupt(path, f"it cannot be read as a PyTorch checkpoint ({_first_line(error)})") from error
    if not isinstance(checkpoint, Mapping):
        raise _corrupt(path, f"it holds a {type(checkpoint).__name__}, not a dict of state dicts")
    absent = [s for s in sections if s not in checkpoint]
    if absent:
        raise _corrupt(path, f"it has no {', '.join(map(repr, absent))} entry (its entries: "
                             f"{', '.join(map(str, checkpoint)) or 'none'})")
    found = {}
    for section in sections:
        state = checkpoint[section]
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise _corrupt(path, f"its {section!r} entry is not a state dict of tensors")
        found[section] = dict(state)
    return found


def _reject_lfs_pointer(path: Path) -> None:
    """A clone of a model repository without Git LFS leaves ~130-byte text stubs under the real names."""
    with open(path, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise _corrupt(path, "it is a Git LFS pointer, not the file itself (run `git lfs pull` in that "
                                 "repository)")


#: How torch's weights-only unpickler reports a global (class / function) it will not touch, torch 2.1 .. 2.13.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|Unsupported class ([\w.]+)|unrecognized function (\S+)")


def _refused_global(error: Exception) -> str | None:
    match = _REFUSED_GLOBAL.search(str(error))
    return next(g for g in match.groups() if g) if match else None


def _wo_reason(error: Exception) -> str:
    """The unpickler's own reason, without torch's generic advice to pass weights_only=False."""
    text = str(error)
    reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    return reason[0] if reason else type(error).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _from_url(path: Path) -> str:
    entry = OFFICIAL_FILES.get(path.name)
    return f" from {entry.url()}" if entry else ""


def _redownload_hint(path: Path) -> str:
    entry = OFFICIAL_FILES.get(path.name)
    if entry is None:
        return "Use the official SadTalker checkpoint files."
    size = f" (the official file is {entry.size:,} bytes)" if entry.size else ""
    return f"Delete it and download it again{size} from {entry.url()}."


def _corrupt(path: Path, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{path} is damaged or incomplete: {what}. {_redownload_hint(path)}")


# ------------------------------------------------------------------------------------------ strict load

def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "",
                ignore_prefixes: Iterable[str] = ()) -> None:
    """Load ``state_dict`` into ``module``: every key of the module present with its shape; keys the module
    lacks are allowed only under ``ignore_prefixes`` (whole sub-trees, e.g. ``"netD_motion"``). BatchNorm
    ``num_batches_tracked`` counters may be absent (they play no part in eval mode).

    Raises ``CheckpointMismatchError`` listing the first offending keys and ``source``.
    """
    import torch

    expected = module.state_dict()
    trees = tuple(p if p.endswith(".") else p + "." for p in ignore_prefixes)
    missing, reshaped, not_tensors = [], [], []
    for key, tensor in expected.items():
        if key not in state_dict:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
        elif not isinstance(state_dict[key], torch.Tensor):
            not_tensors.append(key)
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            reshaped.append(f"{key}: file {tuple(state_dict[key].shape)} vs network {tuple(tensor.shape)}")
    unexpected = [k for k in state_dict if k not in expected and not (k + ".").startswith(trees)]
    problems = [(label, keys) for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                  ("other shape", reshaped), ("not a tensor", not_tensors)) if keys]
    if problems:
        raise CheckpointMismatchError(_mismatch_message(module, source, problems))
    try:
        module.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
    except RuntimeError as error:
        raise CheckpointMismatchError(_mismatch_message(module, source, [("load error", [str(error)])])) from error


def _mismatch_message(module, source: str, problems: list[tuple[str, list[str]]]) -> str:
    where = source or "the checkpoint"
    counts = ", ".join(f"{len(keys)} {label}" for label, keys in problems)
    lines = [f"{where} does not fit {type(module).__name__} ({counts}):"]
    for label, keys in problems:
        more = f" ... and {len(keys) - _LIST_AT_MOST} more" if len(keys) > _LIST_AT_MOST else ""
        lines.append(f"  {label}: {'; '.join(keys[:_LIST_AT_MOST])}{more}")
    lines.append("Use the official SadTalker checkpoint files, downloaded again if in doubt.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- networks

def network_module(network: str):
    """The ``sadtalker_core.nets`` module that defines a network (imported on first use)."""
    if network not in NETWORK_CLASSES:
        raise CheckpointError(f"unknown network {network!r}; known: {', '.join(NETWORK_CLASSES)}")
    return importlib.import_module(f"{__package__}.nets.{NETWORK_CLASSES[network][0]}")


def new_network(network: str, coeff_nc: int = 70) -> torch.nn.Module:
    """An untrained instance of a network (``coeff_nc`` only matters for ``mapping_net``)."""
    cls = getattr(network_module(network), NETWORK_CLASSES[network][1])
    return cls(coeff_nc=coeff_nc) if network == "mapping_net" else cls()


def unused_checkpoint_prefixes(network: str) -> tuple[str, ...]:
    """Sub-trees of the official state dict our network leaves out because inference never uses them,
    declared by the network's module as ``UNUSED_CHECKPOINT_PREFIXES`` (e.g. PoseVAE's encoder and
    discriminator)."""
    return tuple(getattr(network_module(network), "UNUSED_CHECKPOINT_PREFIXES", ()))


def build_networks(checkpoint_set: CheckpointSet, device: str | torch.device = "cpu",
                   names: Iterable[str] | None = None) -> dict[str, torch.nn.Module]:
    """Every network of the set (or those named), strictly loaded, in eval mode, without gradients."""
    states = load_network_states(checkpoint_set, names)
    built = {}
    for name in list(states):
        net = new_network(name, checkpoint_set.coeff_nc)
        load_strict(net, states.pop(name), source=str(checkpoint_set.sources[name]),
                    ignore_prefixes=unused_checkpoint_prefixes(name))
        built[name] = net.eval().requires_grad_(False).to(device)
    return built


# ------------------------------------------------------------------------------------------ command line

def main(argv: Sequence[str] | None = None) -> int:
    """``verify [--dir D] [FILE ...]`` says per file ok / missing / truncated / corrupt (exit 1 unless all ok);
    ``download [--dir D] [--size 256 512] [--old-version]`` fetches what is missing (resuming cut transfers).
    Also reachable as ``python -m sadtalker_core verify|download``."""
    parser = argparse.ArgumentParser(prog="python -m sadtalker_core.checkpoints",
                                     description="Verify or download the official SadTalker checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check sizes and SHA-256 of the files in the folder")
    fetch = commands.add_parser("download", help="download the missing official files into the folder")
    for command in (verify, fetch):
        command.add_argument("dir", nargs="?", default=None,
                             help=f"checkpoint folder (default: ${CHECKPOINTS_ENV} or ./checkpoints)")
        command.add_argument("--dir", dest="dir_option", default=None, metavar="DIR", help="same as DIR")
    verify.add_argument("--files", nargs="+", default=None, help="official file names (default: every one present)")
    fetch.add_argument("--size", type=int, choices=SIZES, nargs="+", default=list(SIZES))
    fetch.add_argument("--old-version", "--old_version", action="store_true",
                       help="also the optional old-version files")
    args = parser.parse_args(argv)
    folder = Path(args.dir_option or args.dir or default_checkpoint_dir())
    show = TerminalBar("B") if sys.stderr.isatty() else None
    try:
        if args.command == "verify":
            results = verify_checkpoints(folder, args.files, show)
            _close(show)
            for r in results:
                note = f"  sha256 {r.sha256}" if r.sha256 else ""
                if r.status == "truncated":
                    note = f"  {r.size} of {r.expected_size} bytes"
                partial = r.path.with_name(r.name + ".partial")
                if r.status == "missing" and partial.is_file():
                    note = f"  ({partial.stat().st_size} bytes of a cut download kept; `download` resumes it)"
                print(f"{r.status:14} {r.name}{note}")
            if not results:
                print(f"no official checkpoint files in {folder}")
            return 0 if results and all(r.ok for r in results) else 1
        names = [safetensors_name(s) for s in args.size] + list(MAPPING_FILES)
        if args.old_version:
            names += list(OLD_SET)
        paths = ensure_checkpoints(folder, names, show)
        _close(show)
        for path in paths:
            print(f"present        {path}")
        return 0
    except CheckpointError as error:
        _close(show)
        print(str(error), file=sys.stderr)
        return 1


def _close(show) -> None:
    if show is not None:
        show.close()


if __name__ == "__main__":
    sys.exit(main())
