"""Job progress as a share of the expected time: stages weighed by measured seconds, honest ETA, text."""

from __future__ import annotations

import pytest

from sadtalker_core.progress import STAGES, ProgressTracker, Stage, StageTimings


def learned(stage_seconds: float, render_seconds: float, frames: int) -> StageTimings:
    timings = StageTimings()
    timings.learn({"num_frames": frames,
                   "seconds": {**{s: stage_seconds for s in STAGES[:-1]}, Stage.RENDER: render_seconds}})
    return timings


def test_shares_follow_the_learned_seconds():
    timings = learned(stage_seconds=1.0, render_seconds=90.0, frames=10)  # 9 s per frame
    tracker = ProgressTracker(timings)
    tracker.update(Stage.RENDER, 5, 20)  # a 20-frame job: 4 s of fixed stages + 180 s of rendering
    assert tracker.fraction() == pytest.approx((4 + 180 * 5 / 20) / (4 + 180))
    assert tracker.text() == "render 5/20 frames"


def test_fraction_grows_through_a_whole_job_and_rendering_dominates():
    tracker = ProgressTracker(learned(stage_seconds=0.5, render_seconds=50.0, frames=25))
    seen = []
    for stage in STAGES[:-1]:
        tracker.update(stage, 0, 1)
        seen.append(tracker.fraction())
    tracker.update("download SadTalker_V0.0.2_256.safetensors", 300_000_000, 700_000_000)
    assert tracker.text() == "download SadTalker_V0.0.2_256.safetensors 300/700 MB"
    for done in range(0, 51, 2):
        tracker.update(Stage.RENDER, done, 50)
        seen.append(tracker.fraction())
    assert seen == sorted(seen[:4]) + sorted(seen[4:]) and seen[-1] == pytest.approx(1.0)
    assert seen[4] < 0.05  # 2 s of fixed stages against 100 s of rendering


def test_eta_is_the_time_left_at_the_measured_pace(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("sadtalker_core.progress.time.time", lambda: clock[0])
    tracker = ProgressTracker(learned(stage_seconds=0.0, render_seconds=10.0, frames=10))
    assert tracker.eta() is None
    tracker.update(Stage.RENDER, 0, 10)
    clock[0] += 30.0
    tracker.update(Stage.RENDER, 3, 10)  # 30 % in 30 s
    assert tracker.eta() == pytest.approx(70.0)


def test_unknown_frame_count_assumes_a_second_and_stopping_text():
    tracker = ProgressTracker()
    assert tracker.fraction() == 0.0 and tracker.text() == "starting"
    tracker.update(Stage.FACE, 0, 1)
    assert 0.0 < tracker.fraction() < 0.2
    tracker.stopping = True
    assert tracker.text() == "Stopping after this batch"


def test_reference_video_frames_count_as_face_finding():
    tracker = ProgressTracker(learned(stage_seconds=2.0, render_seconds=10.0, frames=10))
    tracker.update(Stage.REFERENCE, 5, 10)
    assert tracker.text() == "reference video 5/10 frames"
    # audio and load (4 s) behind, half of face (1 s) of 4 * 2 s + 25 frames * 1 s
    assert tracker.fraction() == pytest.approx(5.0 / 33.0)


def test_signing_after_the_last_frame_keeps_the_bar_full():
    """C2PA signing runs after the last frame: the bar must not fall back while it runs."""
    tracker = ProgressTracker(StageTimings())
    tracker.update(Stage.RENDER, 10, 10)
    rendered = tracker.fraction()
    tracker.update(Stage.SIGN, 0, 0)
    assert rendered == pytest.approx(1.0) and tracker.fraction() == 1.0
    assert tracker.text() == "signing content credentials"
