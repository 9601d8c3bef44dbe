"""Reading official weight files: sections of safetensors files and of ``torch.save`` pickles.

Pickles are read with ``torch.load(weights_only=True)``: a file that needs to run code while loading is refused,
never executed. Safetensors files are header-checked (truncation, damage) and only the needed prefixes read.
Unknown top-level entries (optimizer, discriminator, epoch ...) are ignored. A Git LFS pointer left in place of
a file, and every kind of damage, is reported with the file's official download address.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointMismatchError, CorruptCheckpointError
from .download import OFFICIAL_FILES

if TYPE_CHECKING:
    import torch

_LFS_POINTER = b"version https://git-lfs"


def read_safetensors_sections(path: str | os.PathLike, prefixes: Sequence[str]
                              ) -> dict[str, dict[str, torch.Tensor]]:
    """{prefix: state dict without the prefix} for keys whose part before the first '.' is a wanted prefix;
    no other tensor is read from disk."""
    from safetensors import safe_open

    path = Path(path)
    header = _safetensors_header(path)
    wanted = {p: [] for p in prefixes}
    for key in header:
        head, dot, _ = key.partition(".")
        if dot and head in wanted:
            wanted[head].append(key)
    empty = [p for p, keys in wanted.items() if not keys]
    if empty:
        present = sorted({k.partition(".")[0] for k in header if k != "__metadata__"})
        raise CheckpointMismatchError(
            f"{path} has no tensors under {', '.join(p + '.' for p in empty)} (it holds "
            f"{', '.join(present) or 'no tensors'}): it is not an official SadTalker file. "
            f"{_redownload_hint(path)}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {p: {k[len(p) + 1:]: f.get_tensor(k) for k in keys} for p, keys in wanted.items()}
    except Exception as error:  # the reader's own error types differ between safetensors versions
        raise _corrupt(path, f"reading its tensors failed ({error})") from error


def _safetensors_header(path: Path) -> dict:
    """The parsed JSON header, after the structural checks that give a clear message for a damaged file."""
    size = path.stat().st_size
    _reject_lfs_pointer(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, f"it is only {size} bytes, too small to hold a safetensors header")
        header_len = int.from_bytes(prefix, "little")
        if header_len > size - 8:
            raise _corrupt(path, f"its header claims {header_len} bytes but the whole file has {size}")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    data_end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _corrupt(path, f"the header entry {key!r} has no valid data offsets")
        data_end = max(data_end, offsets[1])
    described = 8 + header_len + data_end
    if described > size:
        raise _corrupt(path, f"the data is truncated: the header describes {described} bytes, the file has {size}")
    if described < size:
        raise _corrupt(path, f"it has {size - described} bytes after the {described} its header describes")
    return header


def torch_load_weights(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU, whatever a host did to ``torch.load``.

    A1111 and SD.Next replace ``torch.load`` with their own whitelist unpickler, which returns ``None`` (no
    exception) for the archive members a current torch writes (``.format_version``, ``byteorder``,
    ``.data/serialization_id``), and other hosts may disable weights-only loading. ``torch.serialization.load``
    is torch's own function, left alone by those patches, and ``weights_only=True`` given explicitly is
    honoured even under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``.
    """
    import torch.serialization

    return torch.serialization.load(str(path), map_location="cpu", weights_only=True)


def read_pickle_sections(path: str | os.PathLike, sections: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """{entry: state dict} for the wanted top-level entries of a ``torch.save`` dict, loaded with
    ``weights_only=True``; other entries are dropped."""
    import torch

    path = Path(path)
    _reject_lfs_pointer(path)
    try:
        checkpoint = torch_load_weights(path)
    except pickle.UnpicklingError as error:
        refused = _refused_global(error)
        if refused:
            raise CorruptCheckpointError(
                f"{path} asks to run Python code while loading (it references {refused}). SadTalker refuses to "
                f"execute code from checkpoint files, so it was not loaded. Official checkpoints hold only "
                f"tensors: delete this file and download the official one again{_from_url(path)}.") from None
        raise _corrupt(path, f"it cannot be read as a PyTorch checkpoint ({_wo_reason(error)})") from error
    except Exception as error:  # torch reports damaged archives as RuntimeError, EOFError, KeyError ...
        raise _corrupt(path, f"it cannot be read as a PyTorch checkpoint ({_first_line(error)})") from error
    if not isinstance(checkpoint, Mapping):
        raise _corrupt(path, f"it holds a {type(checkpoint).__name__}, not a dict of state dicts")
    absent = [s for s in sections if s not in checkpoint]
    if absent:
        raise _corrupt(path, f"it has no {', '.join(map(repr, absent))} entry (its entries: "
                             f"{', '.join(map(str, checkpoint)) or 'none'})")
    found = {}
    for section in sections:
        state = checkpoint[section]
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise _corrupt(path, f"its {section!r} entry is not a state dict of tensors")
        found[section] = dict(state)
    return found


def _reject_lfs_pointer(path: Path) -> None:
    """A clone of a model repository without Git LFS leaves ~130-byte text stubs under the real names."""
    with open(path, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise _corrupt(path, "it is a Git LFS pointer, not the file itself (run `git lfs pull` in that "
                                 "repository)")


#: How torch's weights-only unpickler reports a global (class / function) it will not touch, torch 2.1 .. 2.13.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|Unsupported class ([\w.]+)|unrecognized function (\S+)")


def _refused_global(error: Exception) -> str | None:
    match = _REFUSED_GLOBAL.search(str(error))
    return next(g for g in match.groups() if g) if match else None


def _wo_reason(error: Exception) -> str:
    """The unpickler's own reason, without torch's generic advice to pass weights_only=False."""
    text = str(error)
    reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    return reason[0] if reason else type(error).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _from_url(path: Path) -> str:
    entry = OFFICIAL_FILES.get(path.name)
    return f" from {entry.url()}" if entry else ""


def _redownload_hint(path: Path) -> str:
    entry = OFFICIAL_FILES.get(path.name)
    if entry is None:
        return "Use the official SadTalker checkpoint files."
    size = f" (the official file is {entry.size:,} bytes)" if entry.size else ""
    return f"Delete it and download it again{size} from {entry.url()}."


def _corrupt(path: Path, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{path} is damaged or incomplete: {what}. {_redownload_hint(path)}")
