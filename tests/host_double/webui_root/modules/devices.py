"""A18 modules/devices.py: cpu, device(s) (cpu when listed in --use-cpu, shared_init.py:26-32), dtype,
get_optimal_device, get_device_for(task) (:70-74), torch_gc (counted here), autocast."""

import contextlib

import torch

cpu = torch.device("cpu")
device = device_gfpgan = device_codeformer = device_esrgan = device_interrogate = cpu
dtype = dtype_vae = dtype_unet = dtype_inference = torch.float32
torch_gc_calls = [0]


def get_optimal_device_name():
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_optimal_device():
    return torch.device(get_optimal_device_name())


def get_device_for(task):
    from modules import shared

    if task in shared.cmd_opts.use_cpu or "all" in shared.cmd_opts.use_cpu:
        return cpu
    return get_optimal_device()


def torch_gc():
    torch_gc_calls[0] += 1
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def autocast(disable=False):
    yield


def without_autocast(disable=False):
    return contextlib.nullcontext()
