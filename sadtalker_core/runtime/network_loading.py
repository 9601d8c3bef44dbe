"""Official weights into our networks: the network registry, strict loading, building loaded networks.

Each network class's ``state_dict()`` has exactly the official keys and shapes of its section, so official
files load strictly; sub-trees that inference never uses (e.g. PoseVAE's encoder and discriminator) are
declared by the network's module as ``UNUSED_CHECKPOINT_PREFIXES`` and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

import torch

from ..errors import CheckpointError, CheckpointMismatchError
from ..nets import expnet, face_recon, generator, he_estimator, kp_detector, mapping_net, posevae
from . import weight_files
from .checkpoint_files import CheckpointSet

#: network -> (its module in sadtalker_core.nets, its class)
NETWORKS: dict[str, tuple[ModuleType, type[torch.nn.Module]]] = {
    "face_recon": (face_recon, face_recon.FaceReconNet),
    "expnet": (expnet, expnet.ExpNet),
    "posevae": (posevae, posevae.PoseVAE),
    "kp_detector": (kp_detector, kp_detector.KPDetector),
    "generator": (generator, generator.SPADEGenerator),
    "mapping_net": (mapping_net, mapping_net.MappingNet),
    "he_estimator": (he_estimator, he_estimator.HEEstimator),
}

_LIST_AT_MOST = 8


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
        reader = (weight_files.read_safetensors_sections if path.suffix == ".safetensors"
                  else weight_files.read_pickle_sections)
        found = reader(path, sorted(set(sections.values())))
        states.update({name: found[section] for name, section in sections.items()})
    return {name: states[name] for name in names}



def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "",
                ignore_prefixes: Iterable[str] = ()) -> None:
    """Load ``state_dict`` into ``module``: every key of the module present with its shape; keys the module
    lacks are allowed only under ``ignore_prefixes`` (whole sub-trees, e.g. ``"netD_motion"``). BatchNorm
    ``num_batches_tracked`` counters may be absent (they play no part in eval mode).

    Raises ``CheckpointMismatchError`` listing the first offending keys and ``source``.
    """
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



def _registered(network: str) -> tuple[ModuleType, type[torch.nn.Module]]:
    if network not in NETWORKS:
        raise CheckpointError(f"unknown network {network!r}; known: {', '.join(NETWORKS)}")
    return NETWORKS[network]


def new_network(network: str, coeff_nc: int = 70) -> torch.nn.Module:
    """An untrained instance of a network (``coeff_nc`` only matters for ``mapping_net``)."""
    cls = _registered(network)[1]
    return cls(coeff_nc=coeff_nc) if network == "mapping_net" else cls()


def unused_checkpoint_prefixes(network: str) -> tuple[str, ...]:
    """Sub-trees of the official state dict our network leaves out because inference never uses them,
    declared by the network's module as ``UNUSED_CHECKPOINT_PREFIXES``."""
    return tuple(getattr(_registered(network)[0], "UNUSED_CHECKPOINT_PREFIXES", ()))


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
