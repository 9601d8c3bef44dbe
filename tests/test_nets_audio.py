"""Fast unit tests of the audio-side and 3DMM networks: state-dict trees, shapes, windowing, determinism."""

from __future__ import annotations

import pytest
import torch

import golden
from sadtalker_core.errors import InputError
from sadtalker_core.nets.audio_encoder import AudioEncoder
from sadtalker_core.nets.expnet import ExpNet
from sadtalker_core.nets.face_recon import RECON_OUTPUT_SIZE, FaceReconNet
from sadtalker_core.nets.posevae import (
    LATENT_SIZE,
    SEQ_LEN,
    UNUSED_CHECKPOINT_PREFIXES,
    PoseVAE,
    count_windows,
    drop_unused_keys,
)

NEW_FILE = "SadTalker_V0.0.2_256.safetensors.json"

#: (network, manifest, section, key prefix inside the section)
TREES = [
    (ExpNet, NEW_FILE, "", "audio2exp."),
    (PoseVAE, NEW_FILE, "", "audio2pose."),
    (FaceReconNet, NEW_FILE, "", "face_3drecon."),
    (ExpNet, "auido2exp_00300-model.pth.json", "model", ""),
    (PoseVAE, "auido2pose_00140-model.pth.json", "model", ""),
    (FaceReconNet, "epoch_20.pth.json", "net_recon", ""),
]
#: test ids carry the parity kind names, so ``-k "audio2exp or audio2pose or face_recon"`` selects them
KIND = {ExpNet: "audio2exp", PoseVAE: "audio2pose", FaceReconNet: "face_recon"}


def _manifest_entries(manifest: str, section: str, prefix: str) -> list[dict]:
    """The section's entries under ``prefix`` (prefix removed), in ``state_dict()`` registration order."""
    sw = golden.synth_weights()
    entries = sw.manifest_entries(golden.load_manifest(f"manifests/{manifest}"), section)
    entries = [dict(e, key=e["key"][len(prefix):]) for e in entries if e["key"].startswith(prefix)]
    if all("module_index" in e for e in entries):  # safetensors files are stored in another order
        entries.sort(key=lambda e: e["module_index"])
    return entries


@pytest.mark.parametrize("net_class, manifest, section, prefix", TREES,
                         ids=[f"{KIND[c]}-{m.removesuffix('.json')}" for c, m, _, _ in TREES])
def test_state_dict_tree_matches_manifest(net_class, manifest, section, prefix):
    entries = _manifest_entries(manifest, section, prefix)
    assert entries, f"no {prefix!r} entries in {manifest}"
    if net_class is PoseVAE:
        dropped = [e for e in entries if e["key"].startswith(UNUSED_CHECKPOINT_PREFIXES)]
        assert dropped, "the allow-list should match training-only keys of the official file"
        entries = [e for e in entries if not e["key"].startswith(UNUSED_CHECKPOINT_PREFIXES)]
    expected = [(e["key"], tuple(e["shape"]), e["dtype"].replace("torch.", "")) for e in entries]
    ours = [(k, tuple(v.shape), str(v.dtype).replace("torch.", ""))
            for k, v in net_class().state_dict().items()]
    assert ours == expected


def _synth(prefix: str):
    return golden.synth_state({"manifest": f"manifests/{NEW_FILE}", "seed": 0, "section": "",
                               "strip_prefix": prefix})


@pytest.fixture(scope="module")
def posevae() -> PoseVAE:
    net = PoseVAE()
    net.load_state_dict(drop_unused_keys(_synth("audio2pose.")), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def expnet() -> ExpNet:
    net = ExpNet()
    net.load_state_dict(_synth("audio2exp."), strict=True)
    return net.eval()


def _mels(num_frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(num_frames, 1, 80, 16, generator=generator) * 8 - 4


@torch.no_grad()
@pytest.mark.parametrize("n", [1, 3])
def test_audio2exp_audio2pose_encoder_shape(n):
    assert AudioEncoder().eval()(_mels(n)).shape == (n, 512, 1, 1)


@torch.no_grad()
@pytest.mark.parametrize("n", [1, 7, 10])
def test_audio2exp_shape_and_frame_independence(expnet, n):
    mels, ref, ratio = _mels(n), torch.randn(1, n, 64), torch.rand(1, n, 1)
    out = expnet(mels, ref, ratio)
    assert out.shape == (1, n, 64)
    assert torch.equal(out, expnet(mels, ref, ratio))
    per_frame = torch.cat([expnet(mels[i:i + 1], ref[:, i:i + 1], ratio[:, i:i + 1]) for i in range(n)], dim=1)
    torch.testing.assert_close(per_frame, out, atol=1e-5, rtol=1e-5)


def _official_windowing(net: PoseVAE, mels, ref_pose, pose_class, z):
    """The spec's per-window loop (§1.13), one decoder call at a time, as the reference for the batched path."""
    moving = mels[:, 1:]
    n = moving.shape[1]
    motions = [torch.zeros(1, 1, 6)]
    for k in range(n // SEQ_LEN):
        emb = net.audio_embedding(moving[:, SEQ_LEN * k: SEQ_LEN * (k + 1)])
        motions.append(net.decode(emb, ref_pose, pose_class, z[k]))
    remainder = n % SEQ_LEN
    if remainder:
        emb = net.audio_embedding(moving[:, -SEQ_LEN:])
        if emb.shape[1] < SEQ_LEN:
            emb = torch.cat([emb[:, :1].repeat(1, SEQ_LEN - emb.shape[1], 1), emb], dim=1)
        motions.append(net.decode(emb, ref_pose, pose_class, z[n // SEQ_LEN])[:, -remainder:])
    return torch.cat(motions, dim=1)


@torch.no_grad()
@pytest.mark.parametrize("num_frames", [1, 2, 21, 32, 33, 34, 64, 65])
def test_audio2pose_predict_motion_matches_per_window_loop(posevae, num_frames):
    mels = _mels(num_frames, seed=num_frames).unsqueeze(0)
    ref_pose, pose_class = torch.randn(1, 6) * 0.1, torch.tensor([3])
    z = torch.randn(max(count_windows(num_frames), 1), 1, LATENT_SIZE, generator=torch.Generator().manual_seed(1))
    motion = posevae.predict_motion(mels, ref_pose, pose_class, list(z))
    assert motion.shape == (1, num_frames, 6)
    assert torch.equal(motion[:, 0], torch.zeros(1, 6))
    torch.testing.assert_close(motion, _official_windowing(posevae, mels, ref_pose, pose_class, z),
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(motion, posevae.predict_motion(mels, ref_pose, pose_class, z))


@pytest.mark.parametrize("num_frames, windows", [(1, 0), (2, 1), (32, 1), (33, 1), (34, 2), (65, 2), (66, 3)])
def test_audio2pose_count_windows(num_frames, windows):
    assert count_windows(num_frames) == windows


@torch.no_grad()
def test_audio2pose_draws_one_latent_per_window_in_order(posevae):
    asked = []

    def draw(k):
        asked.append(k)
        return torch.zeros(1, LATENT_SIZE)

    posevae.predict_motion(_mels(70).unsqueeze(0), torch.zeros(1, 6), torch.tensor([0]), draw)
    assert asked == list(range(count_windows(70)))


@torch.no_grad()
def test_audio2pose_rejects_bad_inputs(posevae):
    mels = _mels(40).unsqueeze(0)
    with pytest.raises(InputError, match="latents"):
        posevae.predict_motion(mels, torch.zeros(1, 6), torch.tensor([0]), [torch.zeros(1, LATENT_SIZE)])
    with pytest.raises(InputError, match="pose style"):
        posevae.predict_motion(mels, torch.zeros(1, 6), torch.tensor([46]), lambda k: torch.zeros(1, 64))
    with pytest.raises(InputError, match="no audio frames"):
        posevae.predict_motion(mels[:, :0], torch.zeros(1, 6), torch.tensor([0]), lambda k: torch.zeros(1, 64))


@torch.no_grad()
def test_audio2pose_embedding_and_decode_shapes(posevae):
    emb = posevae.audio_embedding(_mels(5).unsqueeze(0))
    assert emb.shape == (1, 5, 512)
    window = emb[:, :1].expand(1, SEQ_LEN, -1)
    assert posevae.decode(window, torch.zeros(1, 6), torch.tensor([0]), torch.zeros(1, 64)).shape == (1, 32, 6)


@torch.no_grad()
@pytest.mark.parametrize("n", [1, 2])
def test_face_recon_shape_and_determinism(n):
    net = FaceReconNet().eval()
    images = torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(n))
    out = net(images)
    assert out.shape == (n, RECON_OUTPUT_SIZE) == (n, 257)
    assert torch.equal(out, net(images))
