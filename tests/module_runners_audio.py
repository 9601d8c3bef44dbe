"""Parity runners for kinds audio2exp, audio2pose, face_recon: ``run(meta, arrays, state_dict, sidecar)``.

Each runner builds our network, loads the sidecar's synthetic weights strictly (PoseVAE: minus the documented
training-only prefixes), feeds the recorded inputs and compares every recorded output array.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import golden
import tolerances
from sadtalker_core.nets.expnet import ExpNet
from sadtalker_core.nets.face_recon import FaceReconNet
from sadtalker_core.nets.posevae import PoseVAE, count_windows, drop_unused_keys, split_windows


def _build(net_class, state_dict):
    net = net_class()
    net.load_state_dict(state_dict, strict=True)
    return net.eval()


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _weights_id(weights: dict) -> tuple:
    return tuple(weights.get(k) for k in ("manifest", "section", "strip_prefix", "seed"))


def _stage3_inputs(meta: dict, arrays: dict) -> dict | None:
    """The stage-3 sidecar's arrays when the module sidecar says its chunk loop ran on the stage-3 inputs.

    The stage is found by discovery (``stages/s3_*``), and accepted only if it used the same weights and its
    first chunk is the recorded ``audiox``/``ref``/``ratio``.
    """
    if not re.search(r"stage[- ]?3", meta.get("all_chunks_note", "")):
        return None
    chunk = arrays["audiox"].shape[0]
    wanted = _weights_id(meta["weights"])
    for path in golden.sidecars("stages", "s3_*.json"):
        stage_meta, stage = golden.load_sidecar(path)
        weights = stage_meta.get("weights", [])
        weights = weights if isinstance(weights, list) else [weights]
        if wanted not in map(_weights_id, weights) or not {"indiv_mels", "ref", "ratio_gt"} <= stage.keys():
            continue
        first = stage["indiv_mels"][0, :chunk].reshape(arrays["audiox"].shape)
        if (np.array_equal(first, arrays["audiox"])
                and np.array_equal(stage["ref"][:, :chunk, : arrays["ref"].shape[-1]], arrays["ref"])
                and np.array_equal(stage["ratio_gt"][:, :chunk], arrays["ratio"])):
            return stage
    return None


@torch.no_grad()
def run_audio2exp(meta, arrays, state_dict, sidecar):
    net = _build(ExpNet, state_dict)
    output = net(_tensor(arrays["audiox"]), _tensor(arrays["ref"]), _tensor(arrays["ratio"]))
    tolerances.close(sidecar, "output", output, arrays["output"])

    if "all_chunks_output" not in arrays:
        return
    stage = _stage3_inputs(meta, arrays)
    if stage is None:
        pytest.skip(f"{sidecar.name}: all_chunks_output needs the stage-3 inputs, but no stages/s3_*.json with "
                    "the same weights and first chunk was found")
    chunk = arrays["audiox"].shape[0]
    mels, ref, ratio = _tensor(stage["indiv_mels"]), _tensor(stage["ref"]), _tensor(stage["ratio_gt"])
    expression = arrays["ref"].shape[-1]  # the chunk loop feeds ref[..., :64] of the 70-wide stage ref
    chunks = [net(mels[:, i:i + chunk].reshape(-1, *mels.shape[2:]), ref[:, i:i + chunk, :expression],
                  ratio[:, i:i + chunk]) for i in range(0, mels.shape[1], chunk)]
    tolerances.close(sidecar, "all_chunks_output", torch.cat(chunks, dim=1), arrays["all_chunks_output"])


@torch.no_grad()
def run_audio2pose(meta, arrays, state_dict, sidecar):
    net = _build(PoseVAE, drop_unused_keys(state_dict))
    mels = _tensor(arrays["indiv_mels"])
    ref = _tensor(arrays["ref"])
    ref_pose = ref[:, 0, -6:]
    pose_class = _tensor(arrays["pose_class"])
    z = _tensor(arrays["z"])
    num_frames = int(arrays["num_frames"]) if "num_frames" in arrays else mels.shape[1]
    assert num_frames == mels.shape[1], f"num_frames {num_frames} != {mels.shape[1]} mel windows"
    assert z.shape[0] == count_windows(num_frames), f"{z.shape[0]} recorded latents for {num_frames} frames"

    # Per decoder call: one call at a time, exactly as the official loop makes them.
    windows = split_windows(net.audio_embedding(mels[:, 1:]))
    calls = sorted({int(m.group(1)) for k in arrays if (m := re.fullmatch(r"call(\d+)_.*", k))})
    assert set(calls) <= set(range(windows.shape[0])), f"recorded calls {calls}, windows {windows.shape[0]}"
    for k in calls:
        emb = windows[k:k + 1]
        motion = net.decode(emb, ref_pose, pose_class, z[k])
        for name, ours in ((f"call{k}_audio_emb", emb), (f"call{k}_pose_motion_pred", motion)):
            if name in arrays:
                tolerances.close(sidecar, name, ours, arrays[name])

    # The whole sequence through the batched public path.
    motion = net.predict_motion(mels, ref_pose, pose_class, list(z))
    tolerances.close(sidecar, "pose_motion_pred", motion, arrays["pose_motion_pred"])
    tolerances.close(sidecar, "pose_pred", ref[:, :1, -6:] + motion, arrays["pose_pred"])


@torch.no_grad()
def run_face_recon(meta, arrays, state_dict, sidecar):
    net = _build(FaceReconNet, state_dict)
    tolerances.close(sidecar, "output", net(_tensor(arrays["input"])), arrays["output"])


RUNNERS = {
    "audio2exp": run_audio2exp,
    "audio2pose": run_audio2pose,
    "face_recon": run_face_recon,
}
