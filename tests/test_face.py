"""Face landmarks (real dlib models on the real portraits), face choice, crop modes and 3DMM alignment.

The fan backend's real weights are not available offline: its tests check the error messages, the loading
from the checkpoint folder, and the whole code path with random / zero weights.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
import torch

from golden import MEDIA
from sadtalker_core.options import Preprocess
from sadtalker_core.errors import CheckpointNotFoundError, CorruptCheckpointError, NoFaceError, OptionError
from sadtalker_core.face import align, crop, landmarks
from sadtalker_core.face.landmarks import (FAN_DETECTOR_FILE, FAN_LANDMARKER_FILES, detect_faces, detector_status,
                                           locate_face, resolve_backend)
from sadtalker_core.media.image_io import load_image

PORTRAITS = ("art_0.png", "art_7.png", "happy.png", "full_body_1.png")


@pytest.fixture(scope="module")
def images():
    return {name: load_image(MEDIA / name) for name in PORTRAITS}


@pytest.fixture(scope="module")
def dlib_faces(images):
    return {name: detect_faces(image, "dlib") for name, image in images.items()}


@pytest.fixture(scope="module")
def two_faces(images):
    """art_7 (512 px, large face) left of happy (256 px, small face) on white."""
    right = np.full((512, 256, 3), 255, np.uint8)
    right[128:384] = images["happy.png"]
    return np.ascontiguousarray(np.concatenate([images["art_7.png"], right], axis=1))


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ------------------------------------------------------------------------------------- dlib landmarks


@pytest.mark.parametrize("name", PORTRAITS)
def test_dlib_finds_one_face_with_anatomical_landmarks(name, images, dlib_faces):
    faces = dlib_faces[name]
    assert len(faces) == 1
    face = faces[0]
    lm = face.landmarks68
    assert lm.shape == (68, 2) and lm.dtype == np.float32 and face.score > 0
    x0, y0, x1, y1 = face.box
    margin = 0.25 * (x1 - x0)
    assert (lm[:, 0] > x0 - margin).all() and (lm[:, 0] < x1 + margin).all()
    assert (lm[:, 1] > y0 - margin).all() and (lm[:, 1] < y1 + margin).all()
    eyes_y = lm[36:48, 1].mean()
    assert eyes_y < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]  # eyes above nose tip above mouth above chin
    assert lm[36:42, 0].mean() < lm[27:36, 0].mean() < lm[42:48, 0].mean()  # image-left eye, nose, right eye


@pytest.mark.parametrize("name", PORTRAITS)
def test_real_face_aligns_onto_the_standard_face(name, images, dlib_faces):
    result = crop.crop_face(images[name], dlib_faces[name][0].landmarks68, "crop", 256)
    aligned, trans_params, lm_new = align.align_for_recon(result.frame, result.landmarks_in_frame)
    assert aligned.shape == (224, 224, 3) and aligned.dtype == np.uint8
    assert trans_params[0] == trans_params[1] == 256 and trans_params[2] > 0
    # After alignment the 5 points sit where the standard 3-D face projects (102 px per unit, centred).
    expected = align.LM3D_STD_5[:, :2] * align.RESCALE_FACTOR + align.RECON_SIZE / 2
    assert np.abs(align.five_points(lm_new) - expected).max() < 20
    assert (aligned.sum(axis=2) == 0).mean() < 0.2  # the face fills the aligned picture


def test_mmod_detector_agrees_with_hog(images, dlib_faces):
    faces = detect_faces(images["happy.png"], "dlib", detector="mmod")
    assert len(faces) == 1
    assert _iou(faces[0].box, dlib_faces["happy.png"][0].box) > 0.5


def test_several_faces_sorted_largest_first_and_face_index(two_faces):
    faces = detect_faces(two_faces, "dlib")
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[2] <= 512 and faces[1].box[0] >= 512
    assert locate_face(two_faces, backend="dlib").box == faces[0].box
    chosen = locate_face(two_faces, backend="dlib", face_index=1)
    np.testing.assert_array_equal(chosen.landmarks68, faces[1].landmarks68)
    with pytest.raises(OptionError, match=r"face_index 2 is out of range: 2 face\(s\) found, so use 0..1"):
        locate_face(two_faces, backend="dlib", face_index=2)
    with pytest.raises(OptionError, match="integer"):
        landmarks.select_face(faces, "1")


def test_no_face_raises_with_a_fix(images):
    flat_gray = np.full((300, 400, 3), 128, np.uint8)
    below_the_face = np.ascontiguousarray(images["full_body_1.png"][500:])
    for picture in (flat_gray, below_the_face):
        assert detect_faces(picture, "dlib") == []
        with pytest.raises(NoFaceError, match=r"No face found .* give a face box \(x0 y0 x1 y1, pixels\)"):
            locate_face(picture, backend="dlib")
    with pytest.raises(NoFaceError, match="give a face box"):
        landmarks.select_face([])


def test_face_box_runs_only_the_landmarker(images, dlib_faces):
    detected = dlib_faces["happy.png"][0]
    [boxed] = detect_faces(images["happy.png"], "dlib", face_box=detected.box)
    np.testing.assert_array_equal(boxed.landmarks68, detected.landmarks68)
    assert boxed.score is None
    # No detector runs, so even a face-less picture gets 68 points inside the given box.
    [forced] = detect_faces(np.full((200, 200, 3), 90, np.uint8), "dlib", face_box=(-20, 40, 150, 190))
    assert forced.box == (0.0, 40.0, 150.0, 190.0)  # clipped to the image
    assert forced.landmarks68.shape == (68, 2)


@pytest.mark.parametrize("box, message", [
    ((10, 10, 5, 50), "x0 < x1"),
    ((1, 2, 3), "four numbers"),
    ("box", "four numbers"),
    ((500, 500, 600, 600), "outside"),
])
def test_bad_face_box(box, message, images):
    with pytest.raises(OptionError, match=message):
        detect_faces(images["happy.png"], "dlib", face_box=box)


def test_landmarks_given_directly_skip_detection(dlib_faces):
    given = dlib_faces["art_0.png"][0].landmarks68.astype(np.float64)
    face = locate_face(np.full((64, 64, 3), 0, np.uint8), backend="dlib", landmarks=given)
    np.testing.assert_array_equal(face.landmarks68, given.astype(np.float32))
    assert face.box == (given[:, 0].min(), given[:, 1].min(), given[:, 0].max(), given[:, 1].max())
    assert face.score is None
    with pytest.raises(OptionError, match=r"shape \(68, 2\)"):
        locate_face(None, landmarks=np.zeros((5, 2)))
    with pytest.raises(OptionError, match="NaN"):
        locate_face(None, landmarks=np.full((68, 2), np.nan))


def test_bad_backend_detector_and_image():
    picture = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(OptionError, match="Unknown landmark backend"):
        detect_faces(picture, "retinaface")
    with pytest.raises(OptionError, match="Unknown dlib detector"):
        detect_faces(picture, "dlib", detector="yunet")
    with pytest.raises(OptionError, match="S3FD"):
        detect_faces(picture, "fan", detector="hog")
    with pytest.raises(OptionError, match="uint8"):
        detect_faces(picture.astype(np.float32), "dlib")


# --------------------------------------------------------------------------------------------- fan


@pytest.fixture(scope="module")
def fan_weights(tmp_path_factory):
    """Random FAN-4 and all-zero S3FD weights under face-alignment's file names (shapes of the real files)."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    folder = tmp_path_factory.mktemp("fan_weights")
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), folder / FAN_LANDMARKER_FILES[0])
    # Zero weights: every S3FD anchor scores exactly 0.5, below its 0.5 filter, so the whole detection path
    # runs and finds nothing.
    torch.save({k: torch.zeros_like(v) for k, v in s3fd().state_dict().items()}, folder / FAN_DETECTOR_FILE)
    return folder


def test_fan_missing_weights_name_files_and_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(CheckpointNotFoundError) as caught:
        detect_faces(np.zeros((64, 64, 3), np.uint8), "fan", weights_dir=tmp_path, download=False)
    message = str(caught.value)
    for expected in (*FAN_LANDMARKER_FILES, str(tmp_path), "choose the dlib face detector", "adrianbulat.com"):
        assert expected in message


def test_fan_failed_download_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # what sadtalker_core.runtime.download.fetch_file calls
    with pytest.raises(CheckpointNotFoundError, match="download failed"):
        detect_faces(np.zeros((64, 64, 3), np.uint8), "fan", weights_dir=tmp_path / "empty")
    assert not list((tmp_path / "torch_home").rglob("*.partial"))


def test_auto_takes_fan_when_its_weights_are_there(fan_weights):
    assert resolve_backend("auto", fan_weights, download=False)[0] == "fan"
    assert detector_status(fan_weights)["fan"] is None


def test_auto_falls_back_to_dlib_when_fan_weights_cannot_be_had(tmp_path, monkeypatch, images, dlib_faces):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    attempts = []

    def offline(request, *args, **kwargs):
        attempts.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # under the one downloader (download.fetch_file)
    backend, why = resolve_backend("auto", tmp_path)
    assert backend == "dlib" and "fan is unavailable" in why and "download failed" in why
    assert len(attempts) == 1  # tried the download once, then took dlib
    [face, *_] = detect_faces(images["happy.png"], "auto", weights_dir=tmp_path, download=False)
    np.testing.assert_array_equal(face.landmarks68, dlib_faces["happy.png"][0].landmarks68)
    status = detector_status(tmp_path)
    assert status["dlib"] is None and FAN_LANDMARKER_FILES[0] in status["fan"]


def test_auto_with_no_usable_detector_names_both(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve_backend("auto", tmp_path, download=False)
    message = str(caught.value)
    assert "fan:" in message and FAN_LANDMARKER_FILES[0] in message and "pip install dlib-bin" in message


def test_fan_with_random_weights_inside_a_face_box(fan_weights, images):
    box = (45.0, 78.0, 194.0, 228.0)
    [face] = detect_faces(images["happy.png"], "fan", face_box=box, weights_dir=fan_weights, download=False)
    lm = face.landmarks68
    assert lm.shape == (68, 2) and lm.dtype == np.float32 and np.isfinite(lm).all()
    # Every decoded point lies in the 200 * scale window face-alignment crops around the box.
    side = 200.0 * ((box[2] - box[0]) + (box[3] - box[1])) / 195.0
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2 - 0.12 * (box[3] - box[1])])
    assert (np.abs(lm - centre) <= side / 2).all()


def test_fan_detection_path_with_zero_detector(fan_weights):
    picture = np.full((96, 128, 3), 120, np.uint8)
    assert detect_faces(picture, "fan", weights_dir=fan_weights, download=False) == []
    with pytest.raises(NoFaceError, match="fan backend"):
        locate_face(picture, backend="fan", weights_dir=fan_weights, download=False)


def test_fan_torchscript_file_of_face_alignment_1_3(fan_weights, tmp_path):
    from face_alignment.models import FAN

    class ParametersOnly(FAN):
        """FAN's parameters with a trivial forward, so tracing stays cheap (only the weights are read back)."""

        def forward(self, x):
            return x * 1

    reference = torch.load(fan_weights / FAN_LANDMARKER_FILES[0], weights_only=True)
    net = ParametersOnly(4)
    net.load_state_dict(reference)
    torch.jit.trace(net.eval(), torch.zeros(1)).save(str(tmp_path / FAN_LANDMARKER_FILES[1]))
    loaded = landmarks.Detectors().fan(tmp_path / FAN_LANDMARKER_FILES[1], "cpu").state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_fan_damaged_weights(tmp_path):
    (tmp_path / FAN_LANDMARKER_FILES[0]).write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="download it again"):
        detect_faces(np.zeros((64, 64, 3), np.uint8), "fan", face_box=(0, 0, 60, 60), weights_dir=tmp_path,
                     download=False)


# ------------------------------------------------------------------------------------------- crop


@pytest.mark.parametrize("name", PORTRAITS)
@pytest.mark.parametrize("mode", crop.PREPROCESS_MODES)
def test_crop_frame_is_the_described_region(name, mode, images, dlib_faces):
    image = images[name]
    height, width = image.shape[:2]
    result = crop.crop_face(image, dlib_faces[name][0].landmarks68, mode, 256)
    assert result.frame.shape == (256, 256, 3) and result.frame.dtype == np.uint8
    x0, y0, x1, y1 = result.region
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    expected = cv2.resize(image[y0:y1, x0:x1], (256, 256), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(result.frame, expected)

    size_wh, crop_box, quad = result.crop_info.size_wh, result.crop_info.crop_box, result.crop_info.quad_box
    if mode == "resize":
        assert result.crop_info == crop.CropInfo((width, height)) and result.region == (0, 0, width, height)
        return
    clx, cly, crx, cry = crop_box
    inner = (clx + int(quad[0]), cly + int(quad[1]), clx + int(quad[2]), cly + int(quad[3]))
    assert size_wh == (inner[2] - inner[0], inner[3] - inner[1])
    assert result.region == (crop_box if Preprocess(mode).shows_margin else inner)
    assert clx <= inner[0] < inner[2] <= crx and cly <= inner[1] < inner[3] <= cry


def test_landmarks_follow_the_crop(images, dlib_faces):
    # Landmarks mapped into the frame agree with landmarks detected again on the frame.
    result = crop.crop_face(images["art_0.png"], dlib_faces["art_0.png"][0].landmarks68, "crop", 256)
    [again] = detect_faces(result.frame, "dlib")
    assert np.abs(again.landmarks68 - result.landmarks_in_frame).mean() < 3


def test_huge_face_shrink_path_maps_boxes_to_the_original(images, dlib_faces):
    small, lm = images["happy.png"], dlib_faces["happy.png"][0].landmarks68
    factor = 12
    huge = cv2.resize(small, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    huge_lm = (lm + 0.5) * factor - 0.5
    geometry = crop.crop_geometry(huge_lm, huge.shape[1], huge.shape[0])
    assert geometry.shrink > 1  # the official >= 2048 px branch
    for mode in ("crop", "extcrop"):
        reference = crop.crop_face(small, lm, mode, 256)
        result = crop.crop_face(huge, huge_lm, mode, 256)
        # Boxes are in pixels of the picture passed in, ~12x the small picture's boxes.
        assert np.abs(np.array(result.region) - np.array(reference.region) * factor).max() <= 2 * factor
        boxes = np.array(result.crop_info.crop_box), np.array(reference.crop_info.crop_box)
        assert np.abs(boxes[0] - boxes[1] * factor).max() <= 2 * factor
        x0, y0, x1, y1 = result.region
        assert result.crop_info.size_wh == (x1 - x0, y1 - y0) or Preprocess(mode).shows_margin
        assert np.abs(result.frame.astype(int) - reference.frame).mean() < 8
        assert np.abs(result.landmarks_in_frame - reference.landmarks_in_frame).max() < 3


def test_crop_errors(images, dlib_faces):
    lm = dlib_faces["happy.png"][0].landmarks68
    with pytest.raises(OptionError, match="Unknown preprocess mode"):
        crop.crop_face(images["happy.png"], lm, "zoom")
    with pytest.raises(OptionError, match="positive integer"):
        crop.crop_face(images["happy.png"], lm, "crop", 0)
    with pytest.raises(NoFaceError, match="degenerate"):
        crop.crop_face(images["happy.png"], np.full((68, 2), 100.0), "crop")
    with pytest.raises(NoFaceError, match="outside"):
        crop.crop_face(images["happy.png"], lm + 5000, "crop")
    assert crop.crop_face(images["happy.png"], lm, "full", 512).frame.shape == (512, 512, 3)


def test_coeff_73_layout():
    full = np.arange(2 * 257, dtype=np.float32).reshape(2, 257)
    trans = np.array([256, 256, 1.25, 120.5, 99.25])
    out = align.coeff_73(full, trans)
    assert out.shape == (2, 73) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :64], full[:, 80:144])
    np.testing.assert_array_equal(out[:, 64:67], full[:, 224:227])
    np.testing.assert_array_equal(out[:, 67:70], full[:, 254:257])
    np.testing.assert_array_equal(out[:, 70:], np.tile(np.float32([1.25, 120.5, 99.25]), (2, 1)))
