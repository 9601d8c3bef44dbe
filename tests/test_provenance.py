"""Provenance of every output: AI-generated MP4 tags written by the encode, C2PA content credentials signed
with a certificate chain the tests make themselves, the visible watermark; and the live-preview hook of the
pipeline (same renders)."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess

import numpy as np
import pytest

import golden
import media_probe
from sadtalker_core import __version__
from sadtalker_core.media import ffmpeg_io, provenance, video
from sadtalker_core.errors import InputError

#: full mode, so the previews are whole pictures with the face pasted in
FULL = {"face_detector": "dlib", "preprocess": "full", "still": True}
CREATED_BY_MODEL = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def read_tags(path) -> dict[str, str]:
    """Container tags as the bundled ffmpeg reads them back (its ffmetadata dump)."""
    out = subprocess.run([ffmpeg_io.ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, check=True, text=True).stdout
    tags = {}
    for line in out.splitlines()[1:]:
        key, sep, value = line.partition("=")
        if sep:
            tags[key] = value.replace("\\", "")
    return tags


# -- a certificate chain of our own: root CA -> intermediate CA -> signing certificate ----------------------


def _certificate(subject, key, issuer, issuer_key, *, ca: bool, eku=None, self_signed_leaf=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sadtalker-core tests")])

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_key is not key:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                        critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """PEM files: cert.pem (signing certificate + intermediate), key.pem, root.pem (the trust anchor), and a
    self-signed signing certificate the library must refuse."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder = tmp_path_factory.mktemp("c2pa_chain")
    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("Test Root CA", root_key, "Test Root CA", root_key, ca=True)
    inter = _certificate("Test Intermediate CA", inter_key, "Test Root CA", root_key, ca=True)
    leaf = _certificate("Test Signer", leaf_key, "Test Intermediate CA", inter_key, ca=False,
                        eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
    lone = _certificate("Lone Signer", leaf_key, "Lone Signer", leaf_key, ca=False,
                        eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])

    def pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    files = {"cert": pem(leaf) + pem(inter), "root": pem(root), "self_signed": pem(lone),
             "key": leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())}
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def read_manifest(path, trust_root=None):
    """(active manifest, validation state) read back with c2pa-python, or (None, None) without one."""
    import c2pa

    context = c2pa.Context.from_dict({"trust": {"trust_anchors": trust_root.read_text()}}) if trust_root else None
    with open(path, "rb") as stream:
        reader = c2pa.Reader.try_create("video/mp4", stream, context=context)
        if reader is None:
            return None, None
        with reader:
            return reader.get_active_manifest(), reader.get_validation_state()


# -- units: no rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("position", provenance.WATERMARK_POSITIONS)
@pytest.mark.parametrize("opacity", [0.25, 1.0])
def test_watermark_sits_in_its_corner_at_the_asked_strength(position, opacity):
    import torch

    frames = np.full((2, 120, 160, 3), 128, np.uint8)
    mark = provenance.Watermark("AI-generated", (160, 120), position, opacity)
    marked = mark.apply(frames.copy())
    changed = np.argwhere((marked != frames).any(axis=(0, 3)))
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    # only inside the corner box, which touches the asked edges
    bx0, by0, bx1, by1 = mark.box
    assert bx0 <= x0 and x1 < bx1 and by0 <= y0 and y1 < by1
    assert (bx0 == 0) == position.endswith("left") and (by0 == 0) == position.startswith("top")
    assert (bx1 == 160) == position.endswith("right") and (by1 == 120) == position.startswith("bottom")
    assert (bx1 - bx0) < 160 and (by1 - by0) < 40  # a small mark, not a banner
    # the strongest pixels: the black outline (full coverage) blended at `opacity` over grey 128, and the
    # white glyphs (anti-aliased strokes: their cores reach nearly full coverage)
    assert marked.min() == pytest.approx(128 - opacity * 128, abs=1)
    assert 128 + 0.9 * opacity * 127 <= marked.max() <= 128 + opacity * 127 + 1
    # the torch path (frames on the render device) marks the same pixels the same way
    on_torch = mark.apply(torch.from_numpy(frames.copy())).numpy()
    np.testing.assert_array_equal(on_torch, marked)


def test_zero_opacity_leaves_frames_untouched():
    frames = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    assert np.array_equal(provenance.Watermark("x", (64, 64), "top-left", 0.0).apply(frames.copy()), frames)


def test_params_digest_is_canonical():
    assert provenance.params_digest({"a": 1, "b": [1, 2]}) == provenance.params_digest({"b": [1, 2], "a": 1})
    assert provenance.params_digest({"a": 1}) != provenance.params_digest({"a": 2})


def test_writer_tags_the_file_in_the_encode(tmp_path):
    tags = provenance.mp4_metadata("ab" * 32)
    with video.VideoWriter(tmp_path / "tagged.mp4", fps=25, metadata=tags) as writer:
        writer.write(np.zeros((3, 32, 32, 3), np.uint8))
    read = read_tags(tmp_path / "tagged.mp4")
    for key in ("title", "comment", "description"):
        assert "AI-generated" in read[key]
    assert f"sadtalker-core {__version__}" in read["comment"] and "sha256:" + "ab" * 32 in read["description"]


def test_failed_finalize_leaves_nothing_behind(tmp_path):
    def broken(encoded, dest):
        dest.write_bytes(b"half")
        raise InputError("signing failed")

    with pytest.raises(InputError):
        with video.VideoWriter(tmp_path / "x.mp4", fps=25, finalize=broken) as writer:
            writer.write(np.zeros((1, 16, 16, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_credentials_come_from_arguments_or_environment(chain, tmp_path):
    env = {provenance.CERT_ENV: str(chain["cert"]), provenance.KEY_ENV: str(chain["key"])}
    assert provenance.C2paCredentials.resolve(environ={}) is None
    assert provenance.C2paCredentials.resolve(environ=env).cert == chain["cert"]
    assert provenance.C2paCredentials.resolve(chain["cert"], chain["key"], environ={}).key == chain["key"]
    with pytest.raises(InputError, match="private key is missing"):
        provenance.C2paCredentials.resolve(chain["cert"], environ={})
    with pytest.raises(InputError, match="not found"):
        provenance.C2paCredentials.resolve(tmp_path / "nope.pem", chain["key"], environ={})


def test_a_self_signed_signing_certificate_is_refused_clearly(chain, tmp_path):
    source = tmp_path / "in.mp4"
    with video.VideoWriter(source, fps=25) as writer:
        writer.write(np.zeros((1, 16, 16, 3), np.uint8))
    credentials = provenance.C2paCredentials(chain["self_signed"], chain["key"])
    with pytest.raises(InputError, match="not self-signed"):
        provenance.sign_mp4(source, tmp_path / "out.mp4", credentials, provenance.c2pa_manifest("x", [], "0"))


# -- the pipeline: two 2-frame renders --------------------------------------------------------------------


def generate_and_record(talker, *args, **kwargs):
    """``talker.generate(...)`` and the frame batches it handed to the encoder."""
    written = []
    original = video.VideoWriter.write

    def spy(writer, frames):
        written.append(np.array(frames, copy=True))
        return original(writer, frames)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(video.VideoWriter, "write", spy)
        return talker.generate(*args, **kwargs), written


@pytest.fixture(scope="module")
def unsigned_run(sadtalker_256, speech_clip, tmp_path_factory):
    """Full mode, no certificate anywhere, previews collected (and the batches the encoder got), no watermark."""
    import os

    assert provenance.CERT_ENV not in os.environ
    previews = []
    result, written = generate_and_record(sadtalker_256, str(golden.MEDIA / "art_0.png"), speech_clip(0.08),
                                          seed=3, result_dir=tmp_path_factory.mktemp("unsigned"), batch_size=1,
                                          preview=previews.append, **FULL)
    return result, previews, written


@pytest.fixture(scope="module")
def signed_run(sadtalker_256, speech_clip, chain, tmp_path_factory):
    """The same full-mode job signed with the test chain and watermarked (opaque, top-left)."""
    credentials = provenance.C2paCredentials.resolve(chain["cert"], chain["key"], environ={})
    result, written = generate_and_record(
        sadtalker_256, str(golden.MEDIA / "art_0.png"), speech_clip(0.08), seed=3,
        result_dir=tmp_path_factory.mktemp("signed"), batch_size=1, signing=credentials, watermark="AI-generated",
        watermark_position="top-left", watermark_opacity=1.0, **FULL)
    return result, speech_clip(0.08), written


@pytest.mark.slow
def test_unsigned_video_carries_metadata_and_no_manifest(unsigned_run):
    result, _, _ = unsigned_run
    tags = read_tags(result.video_path)
    digest = provenance.params_digest(result.options)
    assert result.info["params_sha256"] == digest
    assert tags["title"] == "AI-generated video"
    assert "AI-generated" in tags["comment"] and f"sadtalker-core {__version__}" in tags["comment"]
    assert f"sha256:{digest}" in tags["comment"] and f"sha256:{digest}" in tags["description"]
    assert read_manifest(result.video_path) == (None, None)
    note = result.info["provenance"]
    assert note == provenance.NO_CREDENTIALS_NOTE and "\n" not in note and "--c2pa_cert" in note


@pytest.mark.slow
def test_preview_gets_every_batch_newest_frame_as_written(unsigned_run):
    result, previews, written = unsigned_run
    width, height = result.info["output_size"]
    assert len(previews) == len(written) == result.info["num_frames"] == 2  # batch_size 1: one per frame
    assert (width, height) == (640, 896)  # full mode: the whole portrait, not the face crop
    for frame, batch in zip(previews, written):
        assert frame.dtype == np.uint8 and frame.shape == (height, width, 3)
        # each preview is the newest frame of the batch handed to the encoder right after it, bit for bit
        np.testing.assert_array_equal(frame, batch[-1])
    assert not np.array_equal(previews[0], previews[1])


@pytest.mark.slow
def test_signed_video_has_a_valid_manifest_naming_model_agent_and_inputs(signed_run, chain):
    result, audio, _ = signed_run
    manifest, state = read_manifest(result.video_path, trust_root=chain["root"])
    assert state == "Trusted"  # signature, hashes and the chain up to our root all check out
    _, untrusted_state = read_manifest(result.video_path)
    assert untrusted_state == "Valid"  # without the root in the trust list: intact, signer unknown
    actions = [a for assertion in manifest["assertions"] if assertion["label"].startswith("c2pa.actions")
               for a in assertion["data"]["actions"]]
    created = [a for a in actions if a["action"] == "c2pa.created"]
    assert len(created) == 1 and created[0]["digitalSourceType"] == CREATED_BY_MODEL
    assert created[0]["softwareAgent"] == {"name": "sadtalker-core", "version": __version__}
    portrait = hashlib.sha256((golden.MEDIA / "art_0.png").read_bytes()).hexdigest()
    sound = hashlib.sha256(audio.read_bytes()).hexdigest()
    ingredients = {i["title"]: i for i in manifest["ingredients"]}
    assert ingredients["art_0.png"]["instance_id"] == f"sha256:{portrait}"
    assert ingredients[audio.name]["instance_id"] == f"sha256:{sound}"
    assert {i["relationship"] for i in ingredients.values()} == {"inputTo"}
    assert all("thumbnail" not in i and "data" not in i for i in ingredients.values())  # hashes, not copies
    assert manifest["signature_info"]["common_name"] == "Test Signer"
    # signing kept the encode's tags, and the file still plays as before
    assert read_tags(result.video_path)["title"] == "AI-generated video"
    assert media_probe.probe_streams(result.video_path)["video"]["frames"] == 2
    assert "signed content credentials" in result.info["provenance"]
    assert json.dumps(result.info)  # the info (sidecar) stays JSON


@pytest.mark.slow
def test_watermark_lands_in_the_video_where_asked(signed_run, unsigned_run):
    marked, plain = np.concatenate(signed_run[2]).astype(int), np.concatenate(unsigned_run[2]).astype(int)
    width, height = signed_run[0].info["output_size"]
    x0, y0, x1, y1 = provenance.Watermark("AI-generated", (width, height), "top-left", 1.0).box
    assert (x0, y0) == (0, 0) and x1 < width // 2 and y1 < height // 10
    # the same seed renders the same frames: outside the mark's box nothing differs, bit for bit
    outside = np.ones((height, width), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(marked[:, outside], plain[:, outside])
    # opaque: white glyphs and a black outline replace the picture inside it
    box = marked[:, y0:y1, x0:x1]
    assert np.abs(box - plain[:, y0:y1, x0:x1]).max() > 100 and box.max() >= 250 and box.min() <= 5
    # and it survives the encode: the decoded file shows the same bright and dark strokes there
    decoded = np.stack(list(video.read_video_frames(signed_run[0].video_path))).astype(int)[:, y0:y1, x0:x1]
    assert decoded.max() > 220 and decoded.min() < 35


def test_cli_takes_the_certificate_flags_and_refuses_half_a_pair(chain, capsys):
    from sadtalker_core.frontends import cli

    args = cli.build_parser().parse_args(["--c2pa-cert", str(chain["cert"]), "--c2pa_key", str(chain["key"]),
                                          "--watermark", "AI", "--watermark_position", "top-left"])
    assert (args.c2pa_cert, args.c2pa_key) == (str(chain["cert"]), str(chain["key"]))
    options = cli.options_from_args(args)
    assert options["watermark"] == "AI" and options["watermark_position"] == "top-left"
    assert cli.main(["--source_image", "face.png", "--driven_audio", "speech.wav", "--c2pa_cert", str(chain["cert"]),
                     "--face_detector", "dlib"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "private key is missing" in error
