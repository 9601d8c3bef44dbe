"""Stage-2 parity (crop / align / 3DMM coefficients), driven by the kit's ``stages/s2_*.json`` sidecars.

Each sidecar names its preprocess mode, frame size, image size and weights. The original picture is not
in the kit, so the crop geometry is checked from the recorded landmarks and image size, and the alignment
and regressor from the recorded crop picture.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import golden
import tolerances
from sadtalker_core.face import align, crop

SIDECARS = golden.sidecars("stages", "s2_*.json")


def test_kit_has_stage2_sidecars(kit):
    assert SIDECARS, f"no stages/s2_*.json sidecars in {kit}"


@functools.lru_cache(maxsize=2)
def _face_recon(manifest: str, seed: int, section: str, strip_prefix: str):
    from sadtalker_core.nets.face_recon import FaceReconNet

    net = FaceReconNet()
    net.load_state_dict(golden.synth_state({"manifest": manifest, "seed": seed, "section": section,
                                            "strip_prefix": strip_prefix}), strict=True)
    return net.eval()


def _crop_expectations(meta: dict):
    info = meta["crop_info"]
    return (tuple(info["original_size_wh"]), info["crop_box_clx_cly_crx_cry"], info["quad_lx_ly_rx_ry"])


@pytest.mark.parity
@pytest.mark.parametrize("sidecar", SIDECARS, ids=lambda path: path.stem)
def test_crop_geometry(sidecar):
    meta, arrays = golden.load_sidecar(sidecar)
    width, height = meta["image_wh"]
    size = int(meta["pic_size"])
    landmarks = arrays["landmarks_orig"]
    size_wh, crop_box, quad_box = _crop_expectations(meta)

    if crop_box is not None:
        geometry = crop.crop_geometry(landmarks, width, height)
        tolerances.exact(sidecar, "crop_box_clx_cly_crx_cry", np.array(geometry.crop_box), np.array(crop_box))
        tolerances.geometry(sidecar, "quad_lx_ly_rx_ry", np.array(geometry.quad_box), np.array(quad_box))

    picture = np.zeros((height, width, 3), np.uint8)  # geometry only: the original picture is not in the kit
    result = crop.crop_face(picture, landmarks, meta["preprocess"], size)
    info = result.crop_info
    ours_size, ours_box, ours_quad = info.size_wh, info.crop_box, info.quad_box
    tolerances.exact(sidecar, "crop_info.original_size_wh", np.array(ours_size), np.array(size_wh))
    assert (ours_box is None) == (crop_box is None) and (ours_quad is None) == (quad_box is None)
    if crop_box is not None:
        tolerances.exact(sidecar, "crop_info.crop_box", np.array(ours_box), np.array(crop_box))
        tolerances.geometry(sidecar, "crop_info.quad", np.array(ours_quad), np.array(quad_box))
    x0, y0, x1, y1 = result.region
    tolerances.exact(sidecar, "landmark_region_ox1_oy1_w_h", np.array([x0, y0, x1 - x0, y1 - y0]),
                     np.array(meta["landmark_region_ox1_oy1_w_h"]))
    assert result.frame.shape == arrays["crop_image_rgb"].shape
    tolerances.geometry(sidecar, "landmarks_in_crop", result.landmarks_in_frame, arrays["landmarks_in_crop"])


@pytest.mark.parity
@pytest.mark.parametrize("sidecar", SIDECARS, ids=lambda path: path.stem)
def test_alignment_and_coefficients(sidecar):
    meta, arrays = golden.load_sidecar(sidecar)
    width, height = meta["image_wh"]
    frame = arrays["crop_image_rgb"]
    # Our own landmark mapping feeds the alignment, so the whole geometric chain is exercised.
    landmarks = crop.crop_face(np.zeros((height, width, 3), np.uint8), arrays["landmarks_orig"],
                               meta["preprocess"], int(meta["pic_size"])).landmarks_in_frame

    tolerances.geometry(sidecar, "align_lm_in_yflipped", align.flip_y(landmarks, frame.shape[0]),
                        arrays["align_lm_in_yflipped"])
    assert align.LM3D_STD_5.dtype == arrays["lm3d_std_5"].dtype
    tolerances.exact(sidecar, "lm3d_std_5", align.LM3D_STD_5, arrays["lm3d_std_5"])

    aligned, trans_params, lm_new = align.align_for_recon(frame, landmarks)
    tolerances.geometry(sidecar, "trans_params", trans_params, arrays["trans_params"])
    tolerances.geometry(sidecar, "lm_new", lm_new, arrays["lm_new"])
    tolerances.exact(sidecar, "aligned_224_rgb", aligned, arrays["aligned_224_rgb"])
    net_input = align.recon_input(aligned)
    assert net_input.dtype == arrays["recon_input"].dtype
    tolerances.exact(sidecar, "recon_input", net_input, arrays["recon_input"])

    pytest.importorskip("sadtalker_core.nets.face_recon", reason="FaceReconNet not written yet")
    import torch

    weights = meta["weights"]
    net = _face_recon(weights["manifest"], int(weights["seed"]), weights.get("section") or "",
                      weights.get("strip_prefix"))
    with torch.no_grad():
        full = net(torch.from_numpy(net_input)).numpy()
    tolerances.close(sidecar, "full_3dmm", full, arrays["full_3dmm"])
    tolerances.close(sidecar, "coeff_3dmm", align.coeff_73(full, trans_params), arrays["coeff_3dmm"])
