"""Enhancer loading and running through spandrel, with small synthetic weights in the official formats."""

from __future__ import annotations

import importlib.util
import re
import sys
import types

import pytest
import torch

from sadtalker_core.render.enhance import ENHANCER_SPECS, _resize, import_spandrel, load_enhancer
from sadtalker_core.errors import CheckpointMismatchError, CheckpointNotFoundError, CorruptCheckpointError, OptionError


def _tiny_realesrgan_x2(num_feat=8, num_grow=32, num_blocks=1, seed=0) -> dict[str, torch.Tensor]:
    """State dict in the key layout of RealESRGAN_x2plus.pth (basicsr RRDBNet, scale 2: pixel-unshuffle
    input of 12 channels) with few features and one block (spandrel fixes the growth channels at 32):
    spandrel detects the architecture and the scale from these keys."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"conv_first": (num_feat, 12)}
    for block in range(num_blocks):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                out = num_feat if conv == 5 else num_grow
                shapes[f"body.{block}.rdb{rdb}.conv{conv}"] = (out, num_feat + (conv - 1) * num_grow)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (num_feat, num_feat)
    shapes["conv_last"] = (3, num_feat)
    state = {}
    for name, (out, inp) in shapes.items():
        state[f"{name}.weight"] = torch.randn(out, inp, 3, 3, generator=gen) * (0.5 / (inp * 9) ** 0.5)
        state[f"{name}.bias"] = torch.randn(out, generator=gen) * 0.01
    return state


@pytest.fixture
def realesrgan_dir(tmp_path):
    torch.save({"params_ema": _tiny_realesrgan_x2()}, tmp_path / ENHANCER_SPECS["realesrgan"].files[0])
    return tmp_path


def test_spandrel_imports_without_leaving_a_torchvision_stand_in():
    spandrel = import_spandrel()
    assert spandrel.MAIN_REGISTRY.get("RestoreFormer") is not None  # the module that imports torchvision
    if importlib.util.find_spec("torchvision") is None:
        assert not any(name == "torchvision" or name.startswith("torchvision.") for name in sys.modules)


def test_missing_weights_name_file_folder_and_url(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as error:
        load_enhancer("gfpgan", tmp_path)
    message = str(error.value)
    assert "GFPGANv1.4.pth" in message and str(tmp_path) in message
    assert ENHANCER_SPECS["gfpgan"].url in message


def test_unknown_enhancer_name(tmp_path):
    with pytest.raises(OptionError, match="unknown enhancer"):
        load_enhancer("gpfgan", tmp_path)


def test_corrupt_and_mismatched_files(tmp_path):
    (tmp_path / "GFPGANv1.4.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="GFPGANv1.4.pth"):
        load_enhancer("gfpgan", tmp_path)
    torch.save({"params_ema": _tiny_realesrgan_x2()}, tmp_path / "GFPGANv1.4.pth")
    with pytest.raises(CheckpointMismatchError, match="ESRGAN"):
        load_enhancer("gfpgan", tmp_path)


def test_realesrgan_upscales_batches_and_tiles(realesrgan_dir):
    enhancer = load_enhancer("realesrgan", realesrgan_dir)
    assert enhancer.architecture == "ESRGAN" and enhancer.scale == 2 and not enhancer.face
    frames = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    out = enhancer.enhance_frames(frames)
    assert out.shape == (2, 3, 80, 112) and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(out[1:], enhancer.enhance_frames(frames[1:]), atol=1e-6)
    # tiles with enough context reproduce the one-piece result
    tiled = enhancer._upscale(frames[:1], tile=16, pad=40)
    assert torch.allclose(tiled, out[:1], atol=1e-5)


def test_safetensors_weights_in_gfpgan_weights_folder(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "gfpgan" / "weights"
    folder.mkdir(parents=True)
    save_file(_tiny_realesrgan_x2(), str(folder / "RealESRGAN_x2plus.safetensors"))
    enhancer = load_enhancer("realesrgan", tmp_path)
    assert enhancer.enhance_frames(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_gfpgan_restores_face_crops_reproducibly(tmp_path):
    """A full-size GFPGANv1Clean with random weights (the official v1.4 architecture, built by spandrel's
    own class) stored like GFPGANv1.4.pth: output size, seeded fixed noise, face-box feathering."""
    spandrel = import_spandrel()
    network = spandrel.MAIN_REGISTRY.get("GFPGAN").architecture
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                   fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    assert network.id == "GFPGAN"
    state = model.state_dict()
    for key, value in state.items():
        if re.fullmatch(r"stylegan_decoder\.(style_conv1|style_convs\.\d+)\.weight", key):
            value.fill_(0.5)  # noise strengths start at 0; trained ones are not
    folder = tmp_path / "gfpgan" / "weights"
    folder.mkdir(parents=True)
    torch.save({"params_ema": state}, folder / "GFPGANv1.4.pth")
    del model, state

    frames = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    stored_noise = load_enhancer("gfpgan", tmp_path)
    assert stored_noise.face and stored_noise.architecture == "GFPGAN"
    out = stored_noise.enhance_frames(frames, out_size=(96, 96))
    assert out.shape == (1, 3, 96, 96) and 0 <= out.min() and out.max() <= 1

    seeded = load_enhancer("gfpgan", tmp_path, seed=7)
    first = seeded.enhance_frames(frames)
    assert torch.equal(first, seeded.enhance_frames(frames))  # the same noise maps on every call
    assert not torch.allclose(_resize(first, (96, 96)), out, atol=1e-3)
    seeded.use_seed(None)  # a kept enhancer goes back to the checkpoint's own maps for a job without a seed
    assert torch.equal(seeded.enhance_frames(frames, out_size=(96, 96)), out)
    seeded.use_seed(7)

    boxed = seeded.enhance_frames(frames, face_box=(16, 8, 48, 56))
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[8:56, 16:48] = False
    assert torch.equal(boxed[0][:, outside], frames[0][:, outside])
    assert not torch.allclose(boxed[0][:, 20:40, 24:40], frames[0][:, 20:40, 24:40], atol=1e-3)


@pytest.mark.parametrize("api", ["install", "registry"])
def test_extra_architectures_are_registered_with_either_spandrel_extra_arches_api(monkeypatch, api):
    """spandrel_extra_arches >= 0.2 registers itself with install(); 0.1.1 (pinned by A1111 1.10 and Forge)
    only exports EXTRA_REGISTRY, which face restoration failed on with AttributeError in those hosts."""
    spandrel = import_spandrel()

    class Registry:
        def __init__(self):
            self.added = []

        def __contains__(self, architecture_id):
            return architecture_id in self.added

        def add(self, *supports):
            self.added.extend(supports)

    registry = Registry()
    monkeypatch.setattr(spandrel, "MAIN_REGISTRY", registry)
    extra = types.ModuleType("spandrel_extra_arches")
    if api == "install":
        extra.install = lambda: registry.add("CodeFormer", "DDColor")
    else:
        extra.EXTRA_REGISTRY = ("CodeFormer", "DDColor")
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", extra)
    import_spandrel()
    import_spandrel()  # a second call finds CodeFormer registered and adds nothing twice
    assert registry.added == ["CodeFormer", "DDColor"]
