"""How far a job is, as a share of its expected time, with the stage and frames in words.

Rendering is most of a job (about 98 % of a one-second clip on a CPU), so a bar that gave each pipeline
stage the same share said "80 %" while nearly every frame was still to come, and its ETA was wrong by
minutes. Here every stage weighs the seconds it is expected to take: the fixed stages what they took in
the last job on this machine (before the first one: the CPU benchmark's shares), rendering its seconds per
frame times the frame count. A host's ETA (elapsed / fraction - elapsed) is then honest once rendering runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


class Stage:
    """The names a job reports in ``progress(stage, done, total)`` (and times in ``info["seconds"]``)."""

    AUDIO = "audio"  # decoding the driving audio, mel windows
    LOAD = "load"  # loading (and first downloading) the networks
    FACE = "face"  # landmarks, crop and 3DMM coefficients of the source
    REFERENCE = "reference"  # reference video frames, reported per frame inside the face stage
    COEFFS = "coeffs"  # ExpNet + PoseVAE coefficients per frame
    RENDER = "render"  # rendering, finishing and encoding the frames
    SIGN = "sign"  # signing the content credentials after the last frame


#: the pipeline's stages, in order
STAGES = (Stage.AUDIO, Stage.LOAD, Stage.FACE, Stage.COEFFS, Stage.RENDER)
#: stages after the last frame (moments of work: the bar stays full)
FINISHING = (Stage.SIGN,)

#: seconds per stage and per rendered 256 px frame before any job ran (bench/bench_pipeline.py on 2 CPU cores)
_FIRST_GUESS = {Stage.AUDIO: 0.1, Stage.LOAD: 5.6, Stage.FACE: 2.0, Stage.COEFFS: 1.4}
_FIRST_GUESS_PER_FRAME = 8.0


@dataclass
class StageTimings:
    """Seconds each fixed stage took and seconds per rendered frame, learned from finished jobs."""

    seconds: dict[str, float] = field(default_factory=lambda: dict(_FIRST_GUESS))
    per_frame: float = _FIRST_GUESS_PER_FRAME
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def learn(self, info: dict) -> None:
        """Takes the timings of a finished job (``GenerationResult.info``: ``seconds`` and ``num_frames``)."""
        seconds, frames = info.get("seconds") or {}, int(info.get("num_frames") or 0)
        with self._lock:
            for stage in _FIRST_GUESS:
                if stage in seconds:
                    self.seconds[stage] = float(seconds[stage])
            if frames and seconds.get(Stage.RENDER):
                self.per_frame = float(seconds[Stage.RENDER]) / frames


class ProgressTracker:
    """Follows one job's ``progress(stage, done, total)`` events."""

    def __init__(self, timings: StageTimings | None = None):
        self.timings = timings or StageTimings()
        self.started = time.time()
        self.stage: str | None = None
        self.done = 0
        self.total = 0
        self.frames = 0  # frames to render, known once rendering starts
        self.stopping = False

    def update(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, int(done), int(total)
        if self._main_stage(stage) == Stage.RENDER:
            self.frames = int(total)

    @staticmethod
    def _main_stage(stage: str) -> str:
        """Downloads and checks of checkpoint files happen while loading; reference videos while finding faces."""
        if stage.startswith(("download", "verify")):
            return Stage.LOAD
        return Stage.FACE if stage == Stage.REFERENCE else stage

    def fraction(self) -> float:
        """Share of the job's expected time that is behind it, 0..1."""
        expected = dict(self.timings.seconds)
        frames = self.frames or 25  # before rendering starts the clip length is not known: assume a second
        expected[Stage.RENDER] = frames * self.timings.per_frame
        total = sum(expected[s] for s in STAGES)
        main = self._main_stage(self.stage) if self.stage else None
        if main in FINISHING:
            return 1.0
        if main not in expected or total <= 0:
            return 0.0
        current = STAGES.index(main)  # the stages before it are done (or had nothing to do)
        behind = sum(expected[s] for s in STAGES[:current])
        if self.total > 0:
            behind += expected[main] * min(self.done / self.total, 1.0)
        return min(behind / total, 1.0)

    def eta(self) -> float | None:
        """Seconds left, or ``None`` until something measurable was done."""
        fraction = self.fraction()
        if fraction <= 0.0:
            return None
        elapsed = time.time() - self.started
        return max(elapsed / fraction - elapsed, 0.0)

    def text(self) -> str:
        """One line: the stage and how far it is ("render 12/50 frames"), or that the job is stopping."""
        if self.stopping:
            return "Stopping after this batch"
        if self.stage is None:
            return "starting"
        main = self._main_stage(self.stage)
        if main == Stage.RENDER:
            return f"render {self.done}/{self.total} frames"
        if main == Stage.SIGN:
            return "signing content credentials"
        if self.stage.startswith("download") and self.total > 0:
            return f"{self.stage} {self.done / 1e6:.0f}/{self.total / 1e6:.0f} MB"
        if self.stage == Stage.REFERENCE and self.total > 0:
            return f"reference video {self.done}/{self.total} frames"
        return self.stage


class TerminalBar:
    """A ``progress(stage, done, total)`` callback for a terminal: one tqdm bar per stage on stderr, in
    ``unit`` (``"B"`` scales to KB/MB for downloads)."""

    def __init__(self, unit: str = "step"):
        self.unit = unit
        self._bar = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        import sys

        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            scaled = dict(unit_scale=True, unit_divisor=1024) if self.unit == "B" else {}
            self._bar = tqdm(total=total or None, desc=stage, unit=self.unit, leave=False, file=sys.stderr,
                             **scaled)
        self._bar.total = total or None
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
