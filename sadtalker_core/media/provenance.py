"""What every video states about its origin: MP4 metadata, signed C2PA content credentials, a watermark.

- ``mp4_metadata``: tags ffmpeg writes during the encode (no second pass). Only the classic iTunes-style
  keys (title, comment, description, synopsis) are used: players and file browsers show those, while
  ``-movflags use_metadata_tags`` would move *every* tag into the QuickTime ``mdta`` list that most of
  them ignore.
- ``C2paCredentials`` / ``sign_mp4``: a C2PA manifest embedded through ``c2pa-python`` when the user gives
  a signing certificate and key: a ``c2pa.created`` action with digital source type
  ``trainedAlgorithmicMedia``, this tool as the software agent, and the source portrait and audio as
  ingredients described by their SHA-256 (never copies or thumbnails).
  What the library (c2pa-rs) asks of the certificate: an X.509 v3 end-entity certificate that is *not* a
  CA and not self-signed, key usage digitalSignature, an extended key usage from the C2PA list
  (emailProtection, documentSigning, timeStamping, OCSPSigning or C2PA claim signing; anyExtendedKeyUsage
  is refused), and an ES256/ES384/ES512 (P-256/P-384/P-521), PS256/PS384/PS512 (RSA-PSS, 2048+ bit) or
  Ed25519 key. The PEM file holds the signing certificate first, then its intermediates (the root is
  optional). Readers call the result "Valid" and, when they trust the root, "Trusted".
- ``Watermark``: optional visible text in a corner of every frame, drawn before the encode.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import __version__
from ..errors import InputError
from ..options import WATERMARK_POSITIONS

TOOL = "sadtalker-core"
AI_LABEL = "AI-generated"
#: IPTC digital source type of media made by a trained model
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CERT_ENV, KEY_ENV, TSA_ENV = "SADTALKER_C2PA_CERT", "SADTALKER_C2PA_KEY", "SADTALKER_C2PA_TSA_URL"
NO_CREDENTIALS_NOTE = (f"This video carries {AI_LABEL} metadata but no signed content credentials (C2PA); to "
                       f"sign, give a certificate chain and key (--c2pa_cert/--c2pa_key, or {CERT_ENV} and "
                       f"{KEY_ENV}).")


def params_digest(options: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the generation options as canonical JSON: equal options give equal digests."""
    text = json.dumps(dict(options), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mp4_metadata(digest: str) -> dict[str, str]:
    """ffmpeg ``-metadata`` tags naming the tool, its version, the AI origin and the parameters' digest."""
    made = f"{AI_LABEL} with {TOOL} {__version__}"
    return {
        "title": f"{AI_LABEL} video",
        "comment": f"{made}; parameters sha256:{digest}",
        "description": f"{AI_LABEL}: a talking-head animation of a still portrait made by {TOOL} "
                       f"{__version__}. The person shown did not necessarily say these words. "
                       f"Generation parameters sha256:{digest}",
        "synopsis": made,
    }


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
         ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".wav": "audio/wav",
         ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".ogg": "audio/ogg", ".flac": "audio/flac",
         ".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm", ".mkv": "video/x-matroska"}


@dataclass(frozen=True)
class Ingredient:
    """An input of the video, described by its hash (C2PA ``inputTo`` ingredient)."""

    title: str
    format: str
    sha256: str
    role: str  # "source portrait" | "driving audio"

    @classmethod
    def of(cls, value: Any, role: str) -> "Ingredient | None":
        """A file path is hashed as it is; an in-memory picture by its decoded RGB pixels."""
        if value is None:
            return None
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            return cls(path.name, _MIME.get(path.suffix.lower(), "application/octet-stream"),
                       file_sha256(path), role)
        pixels = np.ascontiguousarray(np.asarray(value.convert("RGB") if hasattr(value, "convert") else value))
        return cls(f"{role} ({pixels.shape[1]}x{pixels.shape[0]} pixels)", "application/octet-stream",
                   hashlib.sha256(pixels.tobytes()).hexdigest(), role)

    def manifest_entry(self) -> dict:
        # c2pa-rs keeps instance_id and description of a JSON-defined ingredient (v3 drops a bare "hash")
        return {"title": self.title, "format": self.format, "relationship": "inputTo",
                "instance_id": f"sha256:{self.sha256}", "description": f"{self.role}, SHA-256 {self.sha256}"}


@dataclass(frozen=True)
class C2paCredentials:
    """A signing certificate chain (PEM: signing certificate first, then intermediates) and its private key
    (PEM); ``tsa_url``: optional RFC 3161 time-stamp authority (needs network at signing time)."""

    cert: Path
    key: Path
    tsa_url: str | None = None

    @classmethod
    def resolve(cls, cert: str | os.PathLike | None = None, key: str | os.PathLike | None = None,
                tsa_url: str | None = None, environ: Mapping[str, str] = os.environ) -> "C2paCredentials | None":
        """Explicit paths, else the environment; ``None`` when neither names a certificate. Half a pair is an
        error: a user who asked for signing must not silently get unsigned files."""
        cert = cert or environ.get(CERT_ENV) or None
        key = key or environ.get(KEY_ENV) or None
        tsa_url = tsa_url or environ.get(TSA_ENV) or None
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            missing = "certificate" if cert is None else "private key"
            raise InputError(f"C2PA signing needs both a certificate chain and its private key; the {missing} "
                             f"is missing (--c2pa-cert/--c2pa-key or {CERT_ENV}/{KEY_ENV}).")
        for what, path in (("certificate", cert), ("private key", key)):
            if not Path(path).is_file():
                raise InputError(f"C2PA {what} file not found: {path}. Give the path of a PEM file.")
        return cls(Path(cert), Path(key), tsa_url)

    def algorithm(self, key_pem: bytes) -> str:
        """The C2PA signing algorithm that fits the key: ES256/384/512, PS256 or Ed25519."""
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            private = load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as error:
            raise InputError(f"C2PA private key {self.key} is not an unencrypted PEM key ({error}).") from None
        if isinstance(private, ec.EllipticCurvePrivateKey):
            by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
            if private.curve.name not in by_curve:
                raise InputError(f"C2PA key {self.key} uses curve {private.curve.name}; use P-256, P-384 or P-521.")
            return by_curve[private.curve.name]
        if isinstance(private, rsa.RSAPrivateKey):
            return "ps256"
        if isinstance(private, ed25519.Ed25519PrivateKey):
            return "ed25519"
        raise InputError(f"C2PA key {self.key} is a {type(private).__name__}; use an EC (P-256/384/521), RSA or "
                         "Ed25519 key.")


def c2pa_manifest(title: str, ingredients: list[Ingredient], digest: str) -> dict:
    """The manifest definition: created by a trained model, this tool as the agent, inputs by hash."""
    agent = {"name": TOOL, "version": __version__}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "format": "video/mp4",
        "ingredients": [i.manifest_entry() for i in ingredients],
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
            "action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA, "softwareAgent": agent,
            "description": f"{AI_LABEL} talking-head video; generation parameters sha256:{digest}",
        }]}}],
    }


_NO_C2PA = ("C2PA signing was asked for but c2pa-python is not installed: pip install c2pa-python (or remove "
            "the certificate setting).")


def require_c2pa() -> None:
    """Raises the install hint when c2pa-python is missing (checked when a job starts)."""
    import importlib.util

    if importlib.util.find_spec("c2pa") is None:
        raise InputError(_NO_C2PA)


def sign_mp4(source: Path, dest: Path, credentials: C2paCredentials, manifest: dict) -> None:
    """Writes ``source`` with the signed manifest embedded to ``dest`` (the library rewrites the boxes)."""
    try:
        import c2pa
    except ImportError:
        raise InputError(_NO_C2PA) from None
    cert_pem, key_pem = credentials.cert.read_bytes(), credentials.key.read_bytes()
    algorithm = credentials.algorithm(key_pem)
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(algorithm.encode(), cert_pem, key_pem,
                                                           credentials.tsa_url))
        with signer, c2pa.Builder(manifest) as builder, open(source, "rb") as src, open(dest, "w+b") as out:
            builder.sign(signer, "video/mp4", src, out)
    except c2pa.C2paError as error:
        raise InputError(f"C2PA signing with {credentials.cert.name} failed: {error}. The certificate must be an "
                         "end-entity (not CA, not self-signed) certificate with digitalSignature key usage and "
                         "an extended key usage such as emailProtection or documentSigning, followed by its "
                         "intermediates in the PEM file.") from None


# ------------------------------------------------------------------------------------------------------
# visible watermark


class Watermark:
    """Text in a corner of every frame: white glyphs with a dark outline, blended at ``opacity``.

    The glyph mask is drawn once for the frame size; each batch is then one blend over the mark's small box.
    """

    def __init__(self, text: str, frame_size: tuple[int, int], position: str = "bottom-right",
                 opacity: float = 0.5):
        import cv2

        if position not in WATERMARK_POSITIONS:
            raise InputError(f"watermark position {position!r}: use one of {', '.join(WATERMARK_POSITIONS)}.")
        width, height = frame_size
        # about 4 % of the shorter side per text line, never below a legible 10 px
        scale = max(0.3, min(width, height) / 700)
        thickness = max(1, round(scale * 1.5))
        font = cv2.FONT_HERSHEY_SIMPLEX
        (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
        pad = max(2, round(min(width, height) * 0.02))
        box_w, box_h = min(text_w + 2 * pad, width), min(text_h + baseline + 2 * pad, height)
        # the glyphs with a dark outline, so the mark reads on light and dark pictures
        alpha = np.zeros((box_h, box_w), np.uint8)
        colour = np.zeros((box_h, box_w), np.uint8)
        origin = (pad, pad + text_h)
        cv2.putText(alpha, text, origin, font, scale, 255, thickness + 2, cv2.LINE_AA)
        cv2.putText(colour, text, origin, font, scale, 255, thickness, cv2.LINE_AA)
        x0 = width - box_w if position.endswith("right") else 0
        y0 = height - box_h if position.startswith("bottom") else 0
        self.box = (x0, y0, x0 + box_w, y0 + box_h)
        self.opacity = float(opacity)
        self._alpha = alpha.astype(np.float32)[..., None] / 255.0 * self.opacity
        self._colour = colour.astype(np.float32)[..., None]
        self._cache: dict = {}

    def apply(self, frames):
        """(N, H, W, 3) uint8 frames (torch, any device, or numpy), marked in place and returned."""
        x0, y0, x1, y1 = self.box
        region = frames[:, y0:y1, x0:x1]
        if isinstance(frames, np.ndarray):
            alpha, colour = self._alpha, self._colour
            mixed = region.astype(np.float32) * (1 - alpha) + colour * alpha
            region[...] = np.rint(mixed).clip(0, 255).astype(np.uint8)
            return frames
        import torch

        key = frames.device
        if key not in self._cache:
            self._cache[key] = (torch.from_numpy(self._alpha).to(key), torch.from_numpy(self._colour).to(key))
        alpha, colour = self._cache[key]
        mixed = region.float() * (1 - alpha) + colour * alpha
        region.copy_(torch.round(mixed).clamp_(0, 255).to(torch.uint8))
        return frames
