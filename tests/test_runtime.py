"""``models.ModelRuntime``: the one owner of networks, detectors and enhancers, and what ``unload`` frees."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import torch

import golden
from sadtalker_core.motion import coeffs
from sadtalker_core.render import enhance
from sadtalker_core.media.image_io import load_image
from sadtalker_core.runtime.models import ModelRuntime
from test_enhance import _tiny_realesrgan_x2


def _runtime(checkpoint_factory, folder) -> ModelRuntime:
    checkpoint_factory.folder(folder, names=("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar"))
    torch.save({"params_ema": _tiny_realesrgan_x2()}, folder / enhance.ENHANCER_SPECS["realesrgan"].files[0])
    return ModelRuntime(folder, device="cpu")


def test_enhancers_are_read_once_and_unload_frees_everything(checkpoint_factory, tmp_path, monkeypatch):
    runtime = _runtime(checkpoint_factory, tmp_path / "checkpoints")
    runtime.prepare(256, "crop")
    reads = []
    real_load = enhance.load_enhancer
    monkeypatch.setattr(enhance, "load_enhancer", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    upscaler = runtime.enhancer("realesrgan")
    assert runtime.enhancer("realesrgan") is upscaler and reads == ["realesrgan"]  # a second job reads nothing
    [face] = runtime.faces(load_image(golden.MEDIA / "happy.png"), "dlib")
    assert face.landmarks68.shape == (68, 2)
    assert {"face_recon", "expnet", "posevae", "kp_detector@256", "generator@256", "mapping_net@crop",
            "detector:dlib_hog", "detector:dlib_predictor", "enhancer:realesrgan"} <= set(runtime.loaded())

    kp_detector, _, generator = runtime.render_networks(256, "crop")
    held = [weakref.ref(obj) for obj in (kp_detector, generator.module, upscaler, upscaler.descriptor.model)]
    hog = runtime.detectors.dlib_hog()
    del kp_detector, generator, upscaler, face
    runtime.unload()
    gc.collect()
    assert runtime.loaded() == []
    assert [ref() for ref in held] == [None] * len(held)
    assert runtime.detectors.dlib_hog() is not hog  # built again: the store kept nothing


def test_render_precision_is_the_runtimes(checkpoint_factory, tmp_path):
    """The generator the runtime hands out runs under its autocast; keypoints stay float32."""
    runtime = _runtime(checkpoint_factory, tmp_path / "checkpoints")
    runtime.prepare(256, "crop")
    assert runtime.render_dtype == torch.float32 and runtime.device.type == "cpu"
    bf16 = ModelRuntime(runtime.checkpoint_dir, device="cpu", dtype=torch.bfloat16)
    bf16.prepare(256, "crop")
    source = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    semantics = torch.zeros(1, 70, 27)
    plain, half = (r.encode_source(source, semantics, 256, "crop") for r in (runtime, bf16))
    assert plain.feature_3d.dtype == torch.float32 and half.feature_3d.dtype == torch.bfloat16
    assert half.kp_source.dtype == torch.float32
    np.testing.assert_allclose(half.kp_source.numpy(), plain.kp_source.numpy(), atol=1e-5)


def test_motion_primitives(checkpoint_factory, tmp_path):
    """One call per network: the 3DMM regressor, ExpNet and PoseVAE on the runtime's device."""
    runtime = _runtime(checkpoint_factory, tmp_path / "checkpoints")
    runtime.prepare(256, "crop")
    gen = torch.Generator().manual_seed(0)
    assert runtime.recon_coefficients(torch.rand(2, 3, 224, 224, generator=gen)).shape == (2, 257)
    frames = 5
    windows = torch.rand(1, frames, 1, 80, 16, generator=gen)
    expression = runtime.expression(windows, torch.zeros(1, frames, 64), torch.zeros(1, frames, 1))
    pose = runtime.pose(windows, torch.zeros(1, 6), 3, coeffs.pose_latents(frames, gen))
    assert expression.shape == (1, frames, 64) and pose.shape == (1, frames, 6)
    assert torch.isfinite(expression).all() and torch.isfinite(pose).all()
