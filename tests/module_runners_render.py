"""Parity runners for kinds kp_detector, mapping_net, generator, he_estimator:
``run(meta, arrays, state_dict, sidecar)``.

Each runner builds the network, loads the sidecar's synthetic weights strictly, feeds the recorded inputs and
compares every other array of the sidecar with the tolerance for its kind (an unexpected array fails).
"""

from __future__ import annotations

import copy

import torch

import tolerances
from sadtalker_core.nets.generator import SPADEGenerator
from sadtalker_core.nets.he_estimator import HEEstimator
from sadtalker_core.nets.inference import optimize_for_inference
from sadtalker_core.nets.kp_detector import KPDetector
from sadtalker_core.nets.mapping_net import MappingNet

GENERATOR_CHECKS = {"prediction": tolerances.prediction, "occlusion_map": tolerances.mask_like,
                    "mask": tolerances.mask_like, "deformation": tolerances.deformation}


def _load(net: torch.nn.Module, state_dict) -> torch.nn.Module:
    net.load_state_dict(state_dict, strict=True)
    return net.eval()


def _tensor(arrays, name: str) -> torch.Tensor:
    return torch.from_numpy(arrays[name])


def _compare_all(sidecar, arrays, inputs: set[str], outputs: dict, checks: dict, label: str = "") -> None:
    recorded = [name for name in arrays if name not in inputs]
    assert recorded, f"{sidecar.name}: no recorded outputs"
    for name in recorded:
        assert name in outputs, f"{sidecar.name}: recorded array {name!r} has no counterpart in our outputs"
        checks.get(name, tolerances.close)(sidecar.name + label, name, outputs[name], arrays[name])


def _as_loaded_and_optimized(net: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The strictly loaded network, and a copy after the load-time transforms the pipeline applies."""
    return {"": net, " [optimized]": optimize_for_inference(copy.deepcopy(net))}


def _prefixed(head: dict, prefix: str = "out_") -> dict:
    return {prefix + key: value for key, value in head.items()}


@torch.inference_mode()
def run_kp_detector(meta, arrays, state_dict, sidecar) -> None:
    for label, net in _as_loaded_and_optimized(_load(KPDetector(), state_dict)).items():
        outputs = {"value": net(_tensor(arrays, "input"))}
        _compare_all(sidecar, arrays, {"input"}, outputs, {}, label)


@torch.inference_mode()
def run_mapping_net(meta, arrays, state_dict, sidecar) -> None:
    coeff_nc = state_dict["first.0.weight"].shape[1]
    assert arrays["input"].shape[1] == coeff_nc, f"{sidecar.name}: input channels != first.0.weight"
    net = _load(MappingNet(coeff_nc), state_dict)
    outputs = _prefixed(net(_tensor(arrays, "input")))
    _compare_all(sidecar, arrays, {"input"}, outputs, {})


@torch.inference_mode()
def run_he_estimator(meta, arrays, state_dict, sidecar) -> None:
    net = _load(HEEstimator(), state_dict)
    outputs = _prefixed(net(_tensor(arrays, "input")))
    _compare_all(sidecar, arrays, {"input"}, outputs, {})


@torch.inference_mode()
def run_generator(meta, arrays, state_dict, sidecar) -> None:
    inputs = {"source_image", "kp_source", "kp_driving"}
    # Deformation first: its rare mask-threshold flips explain any prediction outlier (golden README §4).
    ordered = dict(sorted(arrays.items(), key=lambda item: item[0] != "deformation"))
    for label, net in _as_loaded_and_optimized(_load(SPADEGenerator(), state_dict)).items():
        outputs = net(_tensor(arrays, "source_image"), _tensor(arrays, "kp_source"),
                      _tensor(arrays, "kp_driving"))
        _compare_all(sidecar, ordered, inputs, outputs, GENERATOR_CHECKS, label)


RUNNERS = {
    "kp_detector": run_kp_detector,
    "mapping_net": run_mapping_net,
    "he_estimator": run_he_estimator,
    "generator": run_generator,
}
