"""Stage parity of the coefficient and face-render stages (kit ``stages/s3_*`` and ``stages/s4_*``).

Everything is driven by the sidecars: weights, parameters, seeds named in the recorded official calls, the
batch variants and the rendered frame indices. Stage 4 renders the coefficients stage 3 generated (its
``coeff_3dmm``) from the source coefficients of the stage-2 sidecar with the same preprocess mode.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

import golden
import tolerances
from sadtalker_core.render import animate
from sadtalker_core.motion import coeffs

S3 = golden.sidecars("stages", "s3_*.json")
S4 = golden.sidecars("stages", "s4_*.json")


def _section(weights: dict) -> str:
    return (weights.get("strip_prefix") or weights.get("section") or "").rstrip(".")


def _networks(meta: dict) -> dict[str, torch.nn.Module]:
    """Our networks for a stage sidecar's ``weights`` entries, keyed by official checkpoint section."""
    from sadtalker_core.nets.expnet import ExpNet
    from sadtalker_core.nets.generator import SPADEGenerator
    from sadtalker_core.nets.kp_detector import KPDetector
    from sadtalker_core.nets.mapping_net import MappingNet
    from sadtalker_core.nets.posevae import PoseVAE, drop_unused_keys

    nets = {}
    for weights in meta["weights"]:
        section = _section(weights)
        state = golden.synth_state(weights)
        if section == "audio2exp":
            net = ExpNet()
        elif section == "audio2pose":
            net, state = PoseVAE(), drop_unused_keys(state)
        elif section == "kp_extractor":
            net = KPDetector()
        elif section == "generator":
            net = SPADEGenerator()
        elif section == "mapping":
            net = MappingNet(coeff_nc=state["first.0.weight"].shape[1])
        else:
            pytest.fail(f"no network for the weights section {section!r}")
        net.load_state_dict(state, strict=True)
        nets[section] = net.eval()
    return nets


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


@pytest.mark.parity
def test_kit_has_motion_stage_sidecars():
    assert S3 and S4, f"no stages/s3_*.json or s4_*.json in {golden.kit_dir()}"


@pytest.mark.parity
@pytest.mark.parametrize("sidecar", S3, ids=[p.stem for p in S3])
def test_stage3_coefficients(sidecar):
    meta, g = golden.load_sidecar(sidecar)
    nets = _networks(meta)
    windows, ref, ratio = _t(g["indiv_mels"]), _t(g["ref"]), _t(g["ratio_gt"])
    pose_style = int(g["pose_class"][0])
    assert pose_style == meta["pose_style"]
    ref_pose = ref[:, 0, coeffs.POSE_SLICE]
    with torch.inference_mode():
        exp = coeffs.expression_coeffs(nets["audio2exp"], windows, ref[:, :, :coeffs.EXPRESSION_SIZE], ratio)
        motion = nets["audio2pose"].predict_motion(windows, ref_pose, _t(g["pose_class"]), _t(g["z"]))
        pose_raw = coeffs.pose_coeffs(nets["audio2pose"], windows, ref_pose, pose_style, _t(g["z"]))
    tolerances.close(sidecar, "exp_pred", exp, g["exp_pred"])
    tolerances.close(sidecar, "pose_motion_pred", motion, g["pose_motion_pred"])
    tolerances.close(sidecar, "pose_pred_raw", pose_raw, g["pose_pred_raw"])

    before = np.concatenate([exp[0].numpy(), coeffs.smooth_pose(pose_raw[0].numpy())], axis=1)
    tolerances.close(sidecar, "coeffs_before_refpose", before, g["coeffs_before_refpose"])
    if not np.array_equal(g["coeffs_before_refpose"], g["coeff_3dmm"]):
        references = [k for k in g if k.startswith(("ref_pose", "refpose"))]
        assert references, f"{sidecar.name}: a reference pose was applied but its coefficients are not recorded"
        before = coeffs.apply_ref_pose(before, g[references[0]])
    tolerances.close(sidecar, "coeff_3dmm", before, g["coeff_3dmm"])


#: the official ``Audio2Coeff.generate`` signature
GENERATE_PARAMETERS = ("batch", "coeff_save_dir", "pose_style", "ref_pose_coeff_path")


def _stage1_of(meta: dict, g: dict) -> dict:
    """The stage-1 sidecar whose ``get_data`` batch this stage-3 sidecar ran on (same windows, ref and ratio)."""
    for path in golden.sidecars("stages", "s1_*.json"):
        s1_meta, s1 = golden.load_sidecar(path)
        if all(k in s1 and np.array_equal(s1[k], g[k]) for k in ("indiv_mels", "ref", "ratio_gt")):
            return s1_meta
    pytest.fail(f"{meta['_name']}: no stages/s1_*.json recorded the get_data batch (indiv_mels, ref, ratio_gt) "
                "it ran on, so the blink draws cannot be derived")


def _reference_pose(meta: dict, g: dict):
    """The reference-pose coefficients the recorded ``generate`` call applied, or None."""
    arguments = golden.call_arguments(meta, "generate", GENERATE_PARAMETERS) or {}
    if arguments.get("ref_pose_coeff_path", "None") == "None":
        assert np.array_equal(g["coeffs_before_refpose"], g["coeff_3dmm"]), (
            f"{meta['_name']}: no reference pose recorded, yet coeff_3dmm differs from coeffs_before_refpose")
        return None
    references = [k for k in g if k.startswith(("ref_pose", "refpose"))]
    if not references:
        golden.unsupported(meta, "generate(ref_pose_coeff_path)", arguments["ref_pose_coeff_path"],
                           "its coefficients are not recorded (expected an array named ref_pose*)")
    return g[references[0]]


@pytest.mark.parity
@pytest.mark.parametrize("sidecar", S3, ids=[p.stem for p in S3])
def test_stage3_random_draws_and_composition(sidecar):
    """The latents (torch seed of the recorded call), the blink curve (the stage-1 ``get_data`` call that made
    this batch: its python seed, zeroed for a reference blink video or ``use_blink=False``) and
    ``generate_coeffs`` end to end from the source row, the recorded references and those two seeds."""
    meta, g = golden.load_sidecar(sidecar)
    torch_seed = golden.recorded_seed(meta, "torch.manual_seed")
    if torch_seed is None:
        golden.unsupported(meta, "torch.manual_seed", None, "the PoseVAE latents need the recorded torch seed")
    num_frames = g["indiv_mels"].shape[1]
    latents = coeffs.pose_latents(num_frames, torch.Generator().manual_seed(torch_seed))
    tolerances.exact(sidecar, "z", latents, g["z"])

    blink = golden.blink_plan(_stage1_of(meta, g))
    tolerances.exact(sidecar, "ratio_gt", blink.ratio(num_frames), g["ratio_gt"][0])
    ref_pose = _reference_pose(meta, g)

    nets = _networks(meta)
    generated = coeffs.generate_coeffs(
        nets["audio2exp"], nets["audio2pose"], _t(g["indiv_mels"]), g["ref"][:, 0], pose_style=meta["pose_style"],
        blink=blink.use_blink, rng=random.Random(blink.seed), generator=torch.Generator().manual_seed(torch_seed),
        # the recorded ref already holds the reference video's expression rows tiled to T frames
        ref_eyeblink=g["ref"][0] if blink.ref_eyeblink else None, ref_pose=ref_pose)
    tolerances.close(sidecar, "coeff_3dmm", generated, g["coeff_3dmm"])


def _stage4_inputs(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """(generated coefficients (T, 70) of stage 3, source coefficient row of stage 2 in this preprocess mode)."""
    stage3 = (golden.load_sidecar(p)[1] for p in golden.sidecars("stages", "s3_*.json"))
    generated = [a["coeff_3dmm"] for a in stage3 if len(a.get("coeff_3dmm", ())) == meta["frame_num"]]
    stage2 = (golden.load_sidecar(p) for p in golden.sidecars("stages", "s2_*.json"))
    # the official source crop is made at the render size (pic_size=size), so its coefficients depend on it
    sources = [a["coeff_3dmm"] for m, a in stage2
               if m.get("preprocess") == meta["preprocess"] and int(m.get("pic_size", meta["size"])) == meta["size"]]
    assert len(generated) == 1, f"expected one stage-3 sidecar with {meta['frame_num']} frames, found {len(generated)}"
    assert len(sources) == 1, (f"expected one stage-2 sidecar in mode {meta['preprocess']} at pic_size {meta['size']}, "
                               f"found {len(sources)}")
    return generated[0], sources[0]


def _camera(meta_or_variant: dict, prefix: str, num_frames: int):
    return animate.camera_sequence(meta_or_variant.get(prefix), num_frames)


@pytest.mark.parity
@pytest.mark.parametrize("sidecar", S4, ids=[p.stem for p in S4])
def test_stage4_batches(sidecar):
    meta, g = golden.load_sidecar(sidecar)
    generated, source = _stage4_inputs(meta)
    num_frames = meta["frame_num"]
    # get_facerender_data repeats the source row once per batch row; a record may keep one or all copies
    copies = g["source_semantics"].shape[0]
    tolerances.exact(sidecar, "source_semantics",
                     np.repeat(animate.source_semantics(source, meta["preprocess"]), copies, axis=0),
                     g["source_semantics"])

    cases = [dict(tag=None, bs=int(m.group(1)), expression_scale=meta["expression_scale"], still=meta["still"],
                  yaw=meta["input_yaw"], pitch=meta["input_pitch"], roll=meta["input_roll"])
             for m in (re.fullmatch(r"target_semantics_bs(\d+)", k) for k in g) if m]
    cases += meta.get("batch_variants", [])
    assert cases, f"{sidecar.name} records no target_semantics_bs* arrays"
    for case in cases:
        suffix = f"_bs{case['bs']}" + (f"_{case['tag']}" if case.get("tag") else "")
        targets = animate.render_targets(generated, source, meta["preprocess"], case["still"],
                                         case["expression_scale"])
        windows = animate.batch_layout(animate.semantic_windows(targets), case["bs"])
        tolerances.exact(sidecar, "target_semantics" + suffix, windows, g["target_semantics" + suffix])
        for axis in ("yaw", "pitch", "roll"):
            sequence = _camera(case, axis, num_frames)
            name = f"{axis}_c_seq{suffix}"
            assert (sequence is None) == (name not in g), f"{name}: recorded iff {axis} keyframes are given"
            if sequence is not None:
                tolerances.close(sidecar, name, animate.batch_layout(sequence, case["bs"]), g[name])


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("sidecar", S4, ids=[p.stem for p in S4])
def test_stage4_render(sidecar):
    """The recorded ``make_animation`` call: its batch layout (B copies of the source, so one canonical and
    source keypoint row per batch row), the frames it rendered (first steps of every batch row) and the
    free-view keyframes, all from the sidecar."""
    meta, g = golden.load_sidecar(sidecar)
    plan = golden.render_plan(meta)
    for name, shape in plan.expected_shapes().items():
        assert name in g, f"{sidecar.name}: the render's {name} is not recorded"
        assert g[name].shape == shape, (f"{sidecar.name}: {name} has shape {g[name].shape}; the recorded render "
                                        f"(B={plan.batch_size}, {plan.steps} steps, size {plan.size}) gives {shape}")
    generated, source = _stage4_inputs(meta)
    nets = _networks(meta)
    assert all(np.array_equal(row, g["source_image"][0]) for row in g["source_image"]), "source copies differ"
    source_image = _t(g["source_image"][:1])
    assert source_image.shape[-1] == plan.size
    num_frames = meta["frame_num"]
    targets = animate.render_targets(generated, source, meta["preprocess"], meta["still"], meta["expression_scale"])
    windows = plan.per_frame(animate.semantic_windows(targets))
    cameras = plan.camera_per_frame(num_frames)
    source_semantics = animate.source_semantics(source, meta["preprocess"])

    with torch.inference_mode():
        kp_canonical = nets["kp_extractor"](source_image)
        kp_source = animate.transform_keypoints(kp_canonical, nets["mapping"](_t(source_semantics)))
        kp_driving = animate.driving_keypoints(
            nets["mapping"], kp_canonical, _t(windows),
            *(None if seq is None else _t(seq) for seq in cameras))
    rows = plan.batch_size
    tolerances.close(sidecar, "kp_canonical", kp_canonical.expand(rows, -1, -1), g["kp_canonical"])
    tolerances.close(sidecar, "kp_source", kp_source.expand(rows, -1, -1), g["kp_source"])
    tolerances.close(sidecar, "kp_driving_per_step", kp_driving.reshape(g["kp_driving_per_step"].shape),
                     g["kp_driving_per_step"])

    batches = list(animate.render_frames(
        nets["kp_extractor"], nets["mapping"], nets["generator"], source_image, source_semantics, windows,
        yaw=cameras[0], pitch=cameras[1], roll=cameras[2], batch_size=len(windows)))
    assert [start for start, _ in batches] == [0]
    frames = batches[0][1]
    tolerances.prediction(sidecar, "rendered_frames", frames, g["rendered_frames"])
    tolerances.uint8_frames(sidecar, "rendered_frames_uint8_hwc", animate.to_uint8(frames),
                            g["rendered_frames_uint8_hwc"])
