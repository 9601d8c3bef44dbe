"""The official checkpoint files as released: where to download them, their sizes and SHA-256 digests.

``ensure_checkpoints`` fetches missing files (``<name>.partial``, size and digest checked, then renamed, so a
folder never holds a half-written file under an official name; a cut transfer is resumed with an HTTP range
request next time). ``verify_checkpoints`` hashes on demand and
remembers each digest per (file, size, mtime) in a small JSON file, so a second verify of 2 GB is instant.

The download base URL is ``$SADTALKER_DOWNLOAD_BASE_URL`` when set (a mirror laid out like the GitHub release
pages: ``<base>/<release tag>/<file name>``), else the GitHub releases of OpenTalker/SadTalker.

Command line: ``python -m sadtalker_core verify|download [--dir DIR]`` (also ``python -m sadtalker_core.runtime.download``).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, CheckpointNotFoundError
from ..progress import TerminalBar

#: ``progress(stage, done, total)``, as in the pipeline; here done/total count bytes.
Progress = Callable[[str, int, int], None]

GITHUB_RELEASES = "https://github.com/OpenTalker/SadTalker/releases/download"
BASE_URL_ENV = "SADTALKER_DOWNLOAD_BASE_URL"
VERIFY_CACHE_NAME = ".sadtalker-verify.json"

_CHUNK = 1 << 20


@dataclass(frozen=True)
class OfficialFile:
    """One released checkpoint file. ``size``/``sha256`` are None where the release page gives none."""

    name: str
    release: str
    size: int | None = None
    sha256: str | None = None

    def url(self, base_url: str | None = None) -> str:
        base = (base_url or os.environ.get(BASE_URL_ENV) or GITHUB_RELEASES).rstrip("/")
        return f"{base}/{self.release}/{self.name}"


def _catalogue(*files: OfficialFile) -> dict[str, OfficialFile]:
    return {f.name: f for f in files}


#: Every checkpoint file SadTalker's loaders read, by official name. The first four (release v0.0.2-rc) are
#: what current SadTalker needs; the rest is the optional old set of release v0.0.2 (``old_version``).
OFFICIAL_FILES: dict[str, OfficialFile] = _catalogue(
    OfficialFile("SadTalker_V0.0.2_256.safetensors", "v0.0.2-rc", 725066984,
                 "c211f5d6de003516bf1bbda9f47049a4c9c99133b1ab565c6961e5af16477bff"),
    OfficialFile("SadTalker_V0.0.2_512.safetensors", "v0.0.2-rc", 725066984,
                 "0e063f7ff5258240bdb0f7690783a7b1374e6a4a81ce8fa33456f4cd49694340"),
    OfficialFile("mapping_00229-model.pth.tar", "v0.0.2-rc", 155521183,
                 "62a1e06006cc963220f6477438518ed86e9788226c62ae382ddc42fbcefb83f1"),
    OfficialFile("mapping_00109-model.pth.tar", "v0.0.2-rc", 155779231,
                 "84a8642468a3fcfdd9ab6be955267043116c2bec2284686a5262f1eaf017f64c"),
    OfficialFile("auido2exp_00300-model.pth", "v0.0.2"),
    OfficialFile("auido2pose_00140-model.pth", "v0.0.2"),
    OfficialFile("facevid2vid_00189-model.pth.tar", "v0.0.2", 2112619148,
                 "fbad01d46f0510276dc4521322dde6824a873a4222cd0740c85762e7067ea71d"),
    OfficialFile("epoch_20.pth", "v0.0.2", 288860037,
                 "6d17a6b23457b521801baae583cb6a58f7238fe6721fc3d65d76407460e9149b"),
)


def official_file(name: str, catalogue: Mapping[str, OfficialFile] | None = None) -> OfficialFile:
    catalogue = OFFICIAL_FILES if catalogue is None else catalogue
    if name not in catalogue:
        raise CheckpointError(f"{name!r} is not an official SadTalker checkpoint file; known files: "
                              f"{', '.join(catalogue)}")
    return catalogue[name]


def how_to_get(names: Iterable[str], catalogue: Mapping[str, OfficialFile] | None = None) -> str:
    """Lines telling a user where to fetch each file by hand."""
    lines = []
    for name in names:
        entry = (OFFICIAL_FILES if catalogue is None else catalogue).get(name)
        lines.append(f"  {entry.url()}" if entry else f"  {name} (not an official release file)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- download

def ensure_checkpoints(directory: str | os.PathLike, files: Iterable[str], progress: Progress | None = None, *,
                       catalogue: Mapping[str, OfficialFile] | None = None, base_url: str | None = None,
                       timeout: float = 60.0) -> list[Path]:
    """Download every file of ``files`` that is not in ``directory`` yet; return the paths of all of them.

    A file is written to ``<name>.partial``, checked against the Content-Length, the known size and the known
    SHA-256, then renamed. A cut transfer keeps the partial file and the next call resumes it (HTTP range);
    a wrong file is deleted. Any failure raises ``CheckpointNotFoundError`` naming the missing files, the
    folder and the URLs to fetch by hand.
    """
    folder = Path(directory)
    entries = [official_file(name, catalogue) for name in files]
    missing = [e for e in entries if not (folder / e.name).is_file()]
    for index, entry in enumerate(missing):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _download(entry, folder / entry.name, base_url, timeout, progress)
        except (OSError, http.client.HTTPException, CheckpointError) as error:
            names = [e.name for e in missing[index:]]
            urls = "\n".join(f"  {e.url(base_url)}" for e in missing[index:])
            raise CheckpointNotFoundError(
                f"Could not download {entry.name} from {entry.url(base_url)}: {_reason(error)}.\n"
                f"Missing checkpoint files in {folder.resolve()}: {', '.join(names)}.\n"
                f"Download them by hand into that folder:\n{urls}") from error
    return [folder / e.name for e in entries]


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"no connection ({error.reason})"
    return str(error)


class _Cut(CheckpointError):
    """The connection ended early; the bytes received stay in the ``.partial`` file for the next attempt."""


def _download(entry: OfficialFile, target: Path, base_url: str | None, timeout: float,
              progress: Progress | None) -> None:
    fetch_file(entry.url(base_url), target, size=entry.size, sha256=entry.sha256, timeout=timeout,
               progress=progress)


def fetch_file(url: str, target: str | os.PathLike, *, size: int | None = None, sha256: str | None = None,
               timeout: float = 60.0, progress: Progress | None = None) -> Path:
    """Downloads ``url`` to ``target`` through ``<name>.partial``, resuming a partial file left by a cut
    transfer with an HTTP range request, then checks ``size`` and ``sha256`` (when known) and renames it.
    A cut keeps the partial file; a file that arrived whole but wrong is deleted. Every first-use download
    (official checkpoints, landmark weights) goes through here.

    Raises ``CheckpointError`` (cut, wrong size or digest, HTTP error) or ``OSError`` (no connection, disk).
    """
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    have = partial.stat().st_size if partial.is_file() else 0
    if size is not None and have > size:
        partial.unlink()
        have = 0
    digest = hashlib.sha256()
    keep = True  # until the bytes are known to be wrong, what was received is worth resuming from
    try:
        if size is not None and have == size:
            done = _hash_into(digest, partial)  # a previous attempt got every byte: only the checks are left
        else:
            done = _fetch(url, partial, have, digest, target.name, size, timeout, progress)
        if size is not None and done != size:
            keep = False
            raise CheckpointError(f"received {done} bytes, the official file has {size}")
        if sha256 is not None and digest.hexdigest() != sha256:
            keep = False
            raise CheckpointError(f"SHA-256 {digest.hexdigest()} differs from the official {sha256}; the "
                                  "download was deleted")
        os.replace(partial, target)
        return target
    except (OSError, http.client.HTTPException) as error:
        if isinstance(error, urllib.error.HTTPError):
            raise CheckpointError(_reason(error)) from error
        if not partial.is_file():
            if isinstance(error, OSError):
                raise
            raise CheckpointError(_reason(error)) from error
        raise _Cut(f"the transfer stopped ({_reason(error)}); the {partial.stat().st_size} bytes received are "
                   f"kept in {partial.name} and the next download resumes from there") from error
    finally:
        if not keep:
            partial.unlink(missing_ok=True)


def _hash_into(digest, path: Path) -> int:
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK * 8):
            digest.update(chunk)
            done += len(chunk)
    return done


def _fetch(url: str, partial: Path, have: int, digest, name: str, size: int | None, timeout: float,
           progress: Progress | None) -> int:
    """Appends the rest of the file to ``partial`` (or rewrites it when the server ignores the range);
    returns the size now in ``partial``."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have > 0 and response.status == 206 and \
            (response.headers.get("Content-Range") or "").replace("bytes ", "").startswith(f"{have}-")
        done = _hash_into(digest, partial) if resumed else 0
        announced = response.headers.get("Content-Length")
        total = done + int(announced) if announced else (size or 0)
        with open(partial, "ab" if resumed else "wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(f"download {name}", done, total)
    if announced and done != total:
        raise _Cut(f"the transfer stopped after {done} of {total} bytes; they are kept in {partial.name} and the "
                   "next download resumes from there")
    return done


# ------------------------------------------------------------------------------------------------ verify

@dataclass(frozen=True)
class VerifyResult:
    """Outcome for one file. ``status``: "ok", "missing", "truncated" (shorter than the official file),
    "corrupt" (wrong digest, or longer than the official file) or "no known hash" (the size matched or is
    unknown, but the release gives no digest to compare)."""

    name: str
    path: Path
    status: str
    size: int | None = None
    sha256: str | None = None
    expected_size: int | None = None
    expected_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "no known hash")


def verify_checkpoints(directory: str | os.PathLike, files: Sequence[str] | None = None,
                       progress: Progress | None = None, *,
                       catalogue: Mapping[str, OfficialFile] | None = None) -> list[VerifyResult]:
    """Check size and SHA-256 of the official files in ``directory`` (default: every official file present).

    Digests are cached per (name, size, mtime) in ``directory/.sadtalker-verify.json``, or in the user cache
    folder when ``directory`` is read-only.
    """
    folder = Path(directory)
    catalogue = OFFICIAL_FILES if catalogue is None else catalogue
    names = list(files) if files is not None else [n for n in catalogue if (folder / n).is_file()]
    caches = _read_caches(folder)
    hashed: dict[str, dict] = {}
    results = []
    for name in names:
        entry = official_file(name, catalogue)
        path = folder / name
        if not path.is_file():
            results.append(VerifyResult(name, path, "missing", None, None, entry.size, entry.sha256))
            continue
        stat = path.stat()
        if entry.size is not None and stat.st_size != entry.size:
            status = "truncated" if stat.st_size < entry.size else "corrupt"
            results.append(VerifyResult(name, path, status, stat.st_size, None, entry.size, entry.sha256))
            continue
        record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        sha = next((c[name]["sha256"] for c in caches
                    if {k: c.get(name, {}).get(k) for k in record} == record), None)
        if sha is None:
            sha = file_sha256(path, progress)
            hashed[name] = {**record, "sha256": sha}
        if entry.sha256 is None:
            status = "no known hash"
        else:
            status = "ok" if sha == entry.sha256 else "corrupt"
        results.append(VerifyResult(name, path, status, stat.st_size, sha, entry.size, entry.sha256))
    if hashed:
        merged: dict[str, dict] = {}
        for cache in reversed(caches):
            merged.update(cache)
        _write_cache(folder, {**merged, **hashed})
    return results


def file_sha256(path: str | os.PathLike, progress: Progress | None = None) -> str:
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK * 8):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(f"verify {path.name}", done, total)
    return digest.hexdigest()


def _user_cache_file(folder: Path) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sadtalker"
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return root / f"verify-{key}.json"


def _cache_files(folder: Path) -> tuple[Path, Path]:
    return folder / VERIFY_CACHE_NAME, _user_cache_file(folder)


def _read_caches(folder: Path) -> list[dict]:
    """The readable caches, folder first; an entry counts only if size and mtime still match the file."""
    caches = []
    for path in _cache_files(folder):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            caches.append({k: v for k, v in data.items() if isinstance(v, dict) and "sha256" in v})
    return caches


def _write_cache(folder: Path, cache: dict) -> None:
    text = json.dumps(cache, indent=1, sort_keys=True)
    for path in _cache_files(folder):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        except OSError:
            continue
    # An unwritable cache only costs a re-hash next time; verification itself succeeded.


# ------------------------------------------------------------------------------------------ command line

def main(argv: Sequence[str] | None = None) -> int:
    """``verify [--dir D] [FILE ...]`` says per file ok / missing / truncated / corrupt (exit 1 unless all ok);
    ``download [--dir D] [--size 256 512] [--old-version]`` fetches what is missing (resuming cut transfers).
    Also reachable as ``python -m sadtalker_core verify|download``."""
    # checkpoint_files imports this module (to fetch missing files), so its names are imported here
    from ..options import SIZES
    from .checkpoint_files import CHECKPOINTS_ENV, MAPPING_FILES, OLD_SET, default_checkpoint_dir, safetensors_name

    parser = argparse.ArgumentParser(prog="python -m sadtalker_core.runtime.download",
                                     description="Verify or download the official SadTalker checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check sizes and SHA-256 of the files in the folder")
    fetch = commands.add_parser("download", help="download the missing official files into the folder")
    for command in (verify, fetch):
        command.add_argument("dir", nargs="?", default=None,
                             help=f"checkpoint folder (default: ${CHECKPOINTS_ENV} or ./checkpoints)")
        command.add_argument("--dir", dest="dir_option", default=None, metavar="DIR", help="same as DIR")
    verify.add_argument("--files", nargs="+", default=None, help="official file names (default: every one present)")
    fetch.add_argument("--size", type=int, choices=SIZES, nargs="+", default=list(SIZES))
    fetch.add_argument("--old-version", "--old_version", action="store_true",
                       help="also the optional old-version files")
    args = parser.parse_args(argv)
    folder = Path(args.dir_option or args.dir or default_checkpoint_dir())
    show = TerminalBar("B") if sys.stderr.isatty() else None
    try:
        if args.command == "verify":
            results = verify_checkpoints(folder, args.files, show)
            _close(show)
            for r in results:
                note = f"  sha256 {r.sha256}" if r.sha256 else ""
                if r.status == "truncated":
                    note = f"  {r.size} of {r.expected_size} bytes"
                partial = r.path.with_name(r.name + ".partial")
                if r.status == "missing" and partial.is_file():
                    note = f"  ({partial.stat().st_size} bytes of a cut download kept; `download` resumes it)"
                print(f"{r.status:14} {r.name}{note}")
            if not results:
                print(f"no official checkpoint files in {folder}")
            return 0 if results and all(r.ok for r in results) else 1
        names = [safetensors_name(s) for s in args.size] + list(MAPPING_FILES)
        if args.old_version:
            names += list(OLD_SET)
        paths = ensure_checkpoints(folder, names, show)
        _close(show)
        for path in paths:
            print(f"present        {path}")
        return 0
    except CheckpointError as error:
        _close(show)
        print(str(error), file=sys.stderr)
        return 1


def _close(show) -> None:
    if show is not None:
        show.close()


if __name__ == "__main__":
    sys.exit(main())
