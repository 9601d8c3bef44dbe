"""Fast checks of the face-render networks: official state-dict trees, the split encode/animate API,
batch broadcasting, small-size shapes, the fused SPADE / spectral-norm paths and reduced precision."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import golden
from sadtalker_core.nets.blocks import SPADEResnetBlock, SpectralNormConv2d, make_coordinate_grid
from sadtalker_core.nets.generator import SPADEGenerator
from sadtalker_core.nets.he_estimator import HEEstimator
from sadtalker_core.nets.kp_detector import KPDetector
from sadtalker_core.nets.mapping_net import MappingNet

SMALL = 128  # smallest render size the 5-level hourglasses accept (S/128 >= 1)
GENERATOR_WEIGHTS = {"manifest": "manifests/SadTalker_V0.0.2_256.safetensors.json", "section": "",
                     "strip_prefix": "generator.", "seed": 0}

# (manifest, section, key prefix inside the section, network factory)
TREES = [
    ("SadTalker_V0.0.2_256.safetensors.json", "", "kp_extractor.", KPDetector),
    ("SadTalker_V0.0.2_256.safetensors.json", "", "generator.", SPADEGenerator),
    ("SadTalker_V0.0.2_512.safetensors.json", "", "kp_extractor.", KPDetector),
    ("SadTalker_V0.0.2_512.safetensors.json", "", "generator.", SPADEGenerator),
    ("facevid2vid_00189-model.pth.tar.json", "generator", "", SPADEGenerator),
    ("facevid2vid_00189-model.pth.tar.json", "kp_detector", "", KPDetector),
    ("facevid2vid_00189-model.pth.tar.json", "he_estimator", "", HEEstimator),
    ("mapping_00229-model.pth.tar.json", "mapping", "", lambda: MappingNet(70)),
    ("mapping_00109-model.pth.tar.json", "mapping", "", lambda: MappingNet(73)),
]


def _manifest_tree(manifest_name: str, section: str, prefix: str) -> list[tuple[str, tuple, str]]:
    sw = golden.synth_weights()
    manifest = sw.load_manifest(str(golden.kit_dir() / "manifests" / manifest_name))
    entries = [e for e in sw.manifest_entries(manifest, section) if e["key"].startswith(prefix)]
    # Safetensors manifests list storage order and give the state_dict() order as module_index.
    entries.sort(key=lambda e: e.get("module_index", 0))
    return [(e["key"][len(prefix):], tuple(e["shape"]), e["dtype"]) for e in entries]


@pytest.mark.parametrize("manifest_name,section,prefix,factory", TREES,
                         ids=[f"{m.removesuffix('.json')}:{s or p.rstrip('.')}" for m, s, p, _ in TREES])
def test_state_dict_matches_manifest(manifest_name, section, prefix, factory):
    with torch.device("meta"):
        net = factory()
    ours = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in net.state_dict().items()]
    expected = _manifest_tree(manifest_name, section, prefix)
    assert expected, f"{manifest_name}: no entries for section {section!r} prefix {prefix!r}"
    assert ours == expected


def test_coordinate_grid_is_corner_aligned_xyz():
    grid = make_coordinate_grid((3, 4, 5))
    assert grid.shape == (3, 4, 5, 3)
    for axis, line in ((0, grid[0, 0, :, 0]), (1, grid[0, :, 0, 1]), (2, grid[:, 0, 0, 2])):  # x~W, y~H, z~D
        torch.testing.assert_close(line, torch.linspace(-1, 1, line.numel()), rtol=0, atol=1e-7, msg=str(axis))
        assert line[0] == -1 and line[-1] == 1
    assert (grid[1:, 1:, 1:] != grid[:-1, :-1, :-1]).all()  # every coordinate varies along its own axis


def test_spectral_norm_conv_matches_torch_eval_and_never_updates_u_v():
    torch.manual_seed(0)
    ours = SpectralNormConv2d(6, 5, 3, padding=1)
    reference = torch.nn.utils.spectral_norm(torch.nn.Conv2d(6, 5, 3, padding=1))
    reference.load_state_dict(ours.state_dict())
    reference.eval()
    x = torch.randn(2, 6, 7, 7)
    u_before = ours.weight_u.clone()
    ours.train()
    out = ours(x)
    assert torch.equal(ours.weight_u, u_before)
    torch.testing.assert_close(out, reference(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fin,fout", [(16, 16), (16, 8)])
def test_fused_spade_block_equals_unfused_spade_composition(fin, fout):
    torch.manual_seed(0)
    block = SPADEResnetBlock(fin, fout, label_nc=6).eval()
    x, seg = torch.randn(2, fin, 8, 8), torch.randn(2, 6, 4, 4)

    def leaky(t):
        return F.leaky_relu(t, 0.2)

    with torch.no_grad():
        shortcut = block.conv_s(block.norm_s(x, seg)) if fin != fout else x
        dx = block.conv_0(leaky(block.norm_0(x, seg)))
        expected = shortcut + block.conv_1(leaky(block.norm_1(dx, seg)))
        torch.testing.assert_close(block(x, seg), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def generator() -> SPADEGenerator:
    net = SPADEGenerator()
    net.load_state_dict(golden.synth_state(GENERATOR_WEIGHTS), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def scene():
    """One source image, its keypoints and two driving keypoint sets (S = 128)."""
    g = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, SMALL, SMALL, generator=g)
    kp_source, kp_driving = (torch.rand(n, 15, 3, generator=g) * 1.6 - 0.8 for n in (1, 2))
    return source, kp_source, kp_driving


@pytest.fixture(scope="module")
def animated(generator, scene):
    """``animate`` of the batch-1 source feature with the 2 driving keypoint sets."""
    source, kp_source, kp_driving = scene
    with torch.inference_mode():
        feature = generator.encode_source(source)
        return feature, generator.animate(feature, kp_source, kp_driving)


def test_generator_shapes_and_ranges(animated):
    feature, out = animated
    q = SMALL // 4
    assert feature.shape == (1, 32, 16, q, q)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "prediction": (2, 3, SMALL, SMALL), "occlusion_map": (2, 1, q, q), "mask": (2, 16, 16, q, q),
        "deformation": (2, 16, q, q, 3)}
    frames = out["prediction"]
    assert 0 <= frames.min() and frames.max() <= 1 and frames.std() > 1e-3
    assert (frames[0] - frames[1]).abs().max() > 1e-3, "different driving keypoints gave the same frame"
    torch.testing.assert_close(out["mask"].sum(dim=1), torch.ones(2, 16, q, q))


@torch.inference_mode()
def test_generator_split_api_equals_forward(generator, scene, animated):
    whole = generator(*scene)
    for name, value in animated[1].items():
        assert torch.equal(value, whole[name]), name


@torch.inference_mode()
def test_generator_broadcasts_one_source_over_driving_batch(generator, scene, animated):
    _, kp_source, kp_driving = scene
    feature, broadcast = animated
    copies = generator.animate(feature.repeat(2, 1, 1, 1, 1), kp_source.repeat(2, 1, 1), kp_driving)
    for name, value in broadcast.items():
        # Not bit-identical: the CPU convolutions block batch 1 and batch 2 differently (~1e-6).
        torch.testing.assert_close(value, copies[name], rtol=0, atol=1e-5, msg=name)


@torch.inference_mode()
def test_small_size_shapes():
    torch.manual_seed(0)
    kp = KPDetector().eval()(torch.rand(2, 3, SMALL, SMALL))
    assert kp.shape == (2, 15, 3) and kp.abs().max() <= 1
    heads = HEEstimator().eval()(torch.rand(2, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in heads.items()} == {
        "yaw": (2, 66), "pitch": (2, 66), "roll": (2, 66), "t": (2, 3), "exp": (2, 45)}
    for coeff_nc in (70, 73):
        heads = MappingNet(coeff_nc).eval()(torch.randn(3, coeff_nc, 27))
        assert {k: tuple(v.shape) for k, v in heads.items()} == {
            "yaw": (3, 66), "pitch": (3, 66), "roll": (3, 66), "t": (3, 3), "exp": (3, 45)}


@torch.inference_mode()
def test_generator_runs_in_bfloat16_on_cpu(generator, scene, animated):
    source, kp_source, kp_driving = scene
    low = copy.deepcopy(generator).to(torch.bfloat16)
    try:
        out = low(source.bfloat16(), kp_source.bfloat16(), kp_driving[:1].bfloat16())["prediction"]
    except (RuntimeError, NotImplementedError) as error:
        pytest.skip(f"bfloat16 not supported on CPU by this torch for an op of the generator: {error}")
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - animated[1]["prediction"][:1]).abs().mean() < 0.05
