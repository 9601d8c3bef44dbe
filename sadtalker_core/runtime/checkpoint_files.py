"""Which official checkpoint file feeds which network, and where the files are.

The choice follows the official ``init_path`` rules (``locate_checkpoints``):

* ``SadTalker_V0.0.2_<size>.safetensors`` holds five networks under the key prefixes ``face_3drecon``,
  ``audio2exp``, ``audio2pose``, ``kp_extractor`` and ``generator`` (keys are split on the first ``.``);
* ``mapping_00229-model.pth.tar`` (MappingNet, 70 channels) serves crop/extcrop/resize,
  ``mapping_00109-model.pth.tar`` (73 channels) serves full/extfull; both modes read the entry ``mapping``;
* the old set (``old_version=True``): ``epoch_20.pth`` [net_recon], ``auido2exp_00300-model.pth`` [model],
  ``auido2pose_00140-model.pth`` [model], ``facevid2vid_00189-model.pth.tar`` [generator, kp_detector,
  he_estimator]; it exists for 256 only.
* When the safetensors file for size 256 is missing but the old set is complete, the old set is used (same
  networks, no download needed; ``CheckpointSet.note`` says so). For 512 there is no such fallback: the old
  set has no 512 renderer. The official code instead fails when it finds the other size's safetensors.

Reading the files is ``weight_files``; building the networks from them is ``network_loading``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointNotFoundError, OptionError
from ..options import PREPROCESS_MODES, SIZES, Preprocess
from .download import Progress, ensure_checkpoints, how_to_get

CHECKPOINTS_ENV = "SADTALKER_CHECKPOINTS"

#: MappingNet file -> its input channels (70 = exp 64 + pose 6; 73 adds crop scale and offsets).
MAPPING_FILES = {"mapping_00229-model.pth.tar": 70, "mapping_00109-model.pth.tar": 73}
OLD_SET = ("epoch_20.pth", "auido2exp_00300-model.pth", "auido2pose_00140-model.pth",
           "facevid2vid_00189-model.pth.tar")

_SAFETENSORS_SECTIONS = {"face_recon": "face_3drecon", "expnet": "audio2exp", "posevae": "audio2pose",
                         "kp_detector": "kp_extractor", "generator": "generator"}

#: official file -> {network: section}. A section is a key prefix (up to the first '.') in a safetensors file
#: and a top-level entry in a pickle.
FILE_SECTIONS: dict[str, dict[str, str]] = {
    **{f"SadTalker_V0.0.2_{size}.safetensors": _SAFETENSORS_SECTIONS for size in SIZES},
    **{name: {"mapping_net": "mapping"} for name in MAPPING_FILES},
    "epoch_20.pth": {"face_recon": "net_recon"},
    "auido2exp_00300-model.pth": {"expnet": "model"},
    "auido2pose_00140-model.pth": {"posevae": "model"},
    "facevid2vid_00189-model.pth.tar": {"generator": "generator", "kp_detector": "kp_detector",
                                        "he_estimator": "he_estimator"},
}


def safetensors_name(size: int) -> str:
    return f"SadTalker_V0.0.2_{size}.safetensors"


def mapping_name(preprocess: str) -> str:
    """The MappingNet file the official code uses for a preprocess mode."""
    coeff_nc = 73 if Preprocess(preprocess).pastes_back else 70
    return next(name for name, nc in MAPPING_FILES.items() if nc == coeff_nc)


# ----------------------------------------------------------------------------------------------- locate

@dataclass(frozen=True)
class CheckpointSource:
    """One network's weights: a file and the section inside it."""

    path: Path
    section: str

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix == ".safetensors"

    def __str__(self) -> str:
        return f"{self.path} [{self.section}{'.*' if self.is_safetensors else ''}]"


@dataclass(frozen=True)
class CheckpointSet:
    """Which file feeds which network, for one (size, preprocess, old_version) choice."""

    sources: Mapping[str, CheckpointSource]
    size: int
    preprocess: str
    coeff_nc: int
    old_version: bool
    note: str = ""
    folders: tuple[Path, ...] = field(default=())

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(s.path for s in self.sources.values()))


def default_checkpoint_dir() -> Path:
    """``$SADTALKER_CHECKPOINTS`` when set (the official WebUI extension's variable), else ``./checkpoints``."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or "checkpoints")


def locate_checkpoints(checkpoint_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                       size: int = 256, preprocess: str = "crop", old_version: bool = False,
                       download: bool = False, progress: Progress | None = None) -> CheckpointSet:
    """Pick the official files for these settings; ``checkpoint_dir`` may list several folders (searched in
    order, per file). With ``download=True`` missing files are fetched into the first folder.

    Raises ``CheckpointNotFoundError`` naming the missing files, the folders searched and the URLs.
    """
    folders = _folders(checkpoint_dir)
    if size not in SIZES:
        raise OptionError(f"size must be one of {SIZES}, got {size!r}", option="size",
                          problem=f"got {size!r}, expected one of {', '.join(map(str, SIZES))}.")
    if preprocess not in PREPROCESS_MODES:
        raise OptionError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}",
                          option="preprocess",
                          problem=f"got {preprocess!r}, expected one of {', '.join(PREPROCESS_MODES)}.")
    if old_version and size != 256:
        problem = (f"the old-version checkpoints hold only 256 renderer weights: use 256, or the new checkpoint "
                   f"set ({safetensors_name(512)}).")
        raise OptionError(f"size: {problem}", option="size", problem=problem)

    def find(name: str) -> Path | None:
        return next((f / name for f in folders if (f / name).is_file()), None)

    mapping = mapping_name(preprocess)
    note = ""
    use_old = old_version
    if not old_version and find(safetensors_name(size)) is None and size == 256 and all(map(find, OLD_SET)):
        use_old = True
        note = f"{safetensors_name(size)} not found; using the old-version files, which hold the same networks"
    wanted = (*OLD_SET, mapping) if use_old else (safetensors_name(size), mapping)

    missing = [name for name in wanted if find(name) is None]
    if missing and download:
        ensure_checkpoints(folders[0], missing, progress)
    elif missing:
        raise CheckpointNotFoundError(_missing_message(missing, folders, old_version))

    sources = {network: CheckpointSource(find(name), section)
               for name in wanted for network, section in FILE_SECTIONS[name].items()}
    return CheckpointSet(sources, size, preprocess, MAPPING_FILES[mapping], use_old, note, folders)


def _folders(checkpoint_dir) -> tuple[Path, ...]:
    if checkpoint_dir is None:
        return (default_checkpoint_dir(),)
    if isinstance(checkpoint_dir, (str, os.PathLike)):
        return (Path(checkpoint_dir),)
    folders = tuple(Path(d) for d in checkpoint_dir)
    if not folders:
        raise OptionError("checkpoint_dir is an empty list of folders")
    return folders


def _missing_message(missing: list[str], folders: tuple[Path, ...], old_version: bool) -> str:
    searched = ", ".join(str(f.resolve()) for f in folders)
    text = (f"Missing SadTalker checkpoint files: {', '.join(missing)}.\nSearched: {searched}.\n"
            f"Download them into {folders[0].resolve()} (or run `python -m sadtalker_core download --dir "
            f"{folders[0]}`):\n{how_to_get(missing)}")
    if not old_version:
        text += (f"\nThe old-version files ({', '.join(OLD_SET)}, release v0.0.2) are optional; "
                 "the SadTalker_V0.0.2_<size>.safetensors file replaces them.")
    return text
