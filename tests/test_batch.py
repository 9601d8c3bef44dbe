"""``python -m sadtalker_core batch``: folder / CSV / JSONL jobs with a bad job among good ones, results.jsonl,
resume after the process is killed mid-batch, and the Ray path against the local one (same bytes, same
results). Renders are 1-frame jobs on the synthetic checkpoints with the offline dlib detector."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import golden
from sadtalker_core.frontends import batch

MEDIA = golden.MEDIA
FAST = {"face_detector": "dlib", "seed": 3}


def _results(folder: Path) -> dict[str, dict]:
    lines = (folder / batch.RESULTS_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(set(r) == {"key", "status", "output", "seconds", "seed", "error"} for r in records)
    return {r["key"]: r for r in records}


@pytest.fixture(scope="module")
def runner(sadtalker_256, tmp_path_factory):
    """A batch runner sharing the session's loaded networks (what ``local_runner`` builds, minus the load)."""
    made = batch.local_runner(sadtalker_256.checkpoint_dir, "cpu", output_dir=tmp_path_factory.mktemp("unused"))
    made.talker_factory = lambda *_: sadtalker_256
    return made


def _run(jobs_spec, result_dir, runner, defaults=FAST, events=None):
    jobs = batch.load_jobs(jobs_spec, result_dir)
    return batch.run_batch(jobs, dict(defaults), result_dir, batch.LocalExecutor(runner),
                           events.append if events is not None else None)


# ------------------------------------------------------------------------------------------- reading jobs

def test_folder_pairs_by_stem_and_one_portrait_speaks_every_audio(tmp_path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in ("ann.png", "ann.wav", "bob.jpg", "bob.mp3", "cat.wav", "dan.png", "notes.txt"):
        (pairs / name).write_bytes(b"x")
    jobs = {j.key: j for j in batch.load_jobs(pairs, tmp_path / "out")}
    assert set(jobs) == {"ann", "bob", "cat", "dan"}
    assert jobs["ann"].source_image.endswith("ann.png") and jobs["ann"].driven_audio.endswith("ann.wav")
    assert jobs["ann"].error is None and jobs["ann"].output == tmp_path / "out" / "ann.mp4"
    assert "no portrait named cat" in jobs["cat"].error and "no audio file named dan" in jobs["dan"].error

    single = tmp_path / "single"
    single.mkdir()
    for name in ("face.png", "a.wav", "b.flac"):
        (single / name).write_bytes(b"x")
    jobs = batch.load_jobs(single, tmp_path / "out")
    assert [(j.key, Path(j.source_image).name, Path(j.driven_audio).name) for j in jobs] == [
        ("a", "face.png", "a.wav"), ("b", "face.png", "b.flac")]


def test_rows_resolve_relative_paths_override_defaults_and_keep_keys_unique(tmp_path):
    spec = tmp_path / "sub" / "jobs.jsonl"
    spec.parent.mkdir()
    spec.write_text("\n".join([
        json.dumps({"source_image": "p.png", "driven_audio": "/abs/s.wav", "pose_style": 4, "output": "first"}),
        "",
        "{not json",
        json.dumps({"source_image": "p.png", "driven_audio": "s.wav", "ref_pose": "pose.mp4"}),
        json.dumps({"source_image": "p.png", "driven_audio": "s.wav"}),
        json.dumps([1, 2]),
    ]))
    jobs = batch.load_jobs(spec, tmp_path / "out")
    assert [j.key for j in jobs] == ["first", "line3", "s", "s_2", "line6"]
    first, bad, second, third, array = jobs
    assert first.source_image == str(spec.parent / "p.png") and first.driven_audio == "/abs/s.wav"
    assert first.output == tmp_path / "out" / "first.mp4" and first.options == {"pose_style": 4}
    assert "line 3 is not JSON" in bad.error and "not a JSON object" in array.error
    assert second.options == {"ref_pose": str(spec.parent / "pose.mp4")}
    assert third.output.name == "s_2.mp4" and second.output.name == "s.mp4"
    task = batch.prepare(first, {"pose_style": 1, "still": True})
    assert task.config.pose_style == 4 and task.config.still is True and task.config.seed is not None
    with pytest.raises(batch.BatchError, match="not JSON"):
        batch.prepare(bad, {})

    table = tmp_path / "jobs.csv"
    table.write_text("source_image,driven_audio,expression_scale,output\np.png,s.wav,,x.mp4\n"
                     "p.png,s.wav,2.5,\n")
    rows = batch.load_jobs(table, tmp_path / "out")
    assert [r.options for r in rows] == [{}, {"expression_scale": "2.5"}]  # empty cell: the default applies
    assert batch.prepare(rows[1], {"expression_scale": 1.0}).config.expression_scale == 2.5


def test_unreadable_jobs_list_names_the_fix(tmp_path):
    with pytest.raises(batch.BatchError, match="does not exist"):
        batch.load_jobs(tmp_path / "missing.jsonl", tmp_path)
    other = tmp_path / "jobs.txt"
    other.write_text("x")
    with pytest.raises(batch.BatchError, match="neither a folder, a .csv nor a .jsonl"):
        batch.load_jobs(other, tmp_path)


def test_a_half_written_file_is_not_a_result(tmp_path):
    stub = tmp_path / "k.mp4"
    stub.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(200))
    assert not batch.is_valid_video(stub) and not batch.is_valid_video(tmp_path / "absent.mp4")


# ------------------------------------------------------------------------------------------------ running

@pytest.mark.slow
def test_folder_batch_with_bad_jobs(runner, speech_clip, tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    shutil.copy(MEDIA / "happy.png", jobs / "alice.png")
    shutil.copy(speech_clip(0.04), jobs / "alice.wav")
    (jobs / "bob.png").write_bytes(b"not a picture")
    shutil.copy(speech_clip(0.04), jobs / "bob.wav")
    shutil.copy(speech_clip(0.04), jobs / "carol.wav")
    out = tmp_path / "out"
    events = []
    summary = _run(jobs, out, runner, events=events)
    assert not summary.ok and (summary.count("ok"), summary.count("failed")) == (1, 2)
    results = _results(out)
    assert list(results) == ["alice", "bob", "carol"]  # job order, whatever order they finished in
    assert results["alice"]["status"] == "ok" and results["alice"]["seed"] == 3
    assert results["alice"]["output"] == str(out / "alice.mp4") and batch.is_valid_video(out / "alice.mp4")
    assert (out / "alice.json").is_file()  # the sidecar, as for every job
    assert results["bob"]["status"] == "failed" and "bob.png" in results["bob"]["error"]
    assert results["carol"]["status"] == "failed" and "no portrait named carol" in results["carol"]["error"]
    assert results["carol"]["output"] is None
    kinds = [(e.kind, e.key) for e in events]
    assert ("start", "alice") in kinds and kinds[-1][0] == "done" and events[-1].finished == 3
    assert any(e.kind == "stage" and e.stage == "render" for e in events)
    assert sorted(p.name for p in out.iterdir()) == ["alice.json", "alice.mp4", "results.jsonl"]


@pytest.mark.slow
def test_csv_and_jsonl_batches_row_options_override_defaults(runner, speech_clip, tmp_path):
    clip = speech_clip(0.04)
    table = tmp_path / "jobs.csv"
    table.write_text(f"key,source_image,driven_audio,seed,output\n"
                     f"good,{MEDIA / 'happy.png'},{clip},11,named.mp4\n"
                     f"noaudio,{MEDIA / 'happy.png'},{tmp_path / 'missing.wav'},,\n")
    out = tmp_path / "csv_out"
    _run(table, out, runner)
    results = _results(out)
    assert results["good"] == {"key": "good", "status": "ok", "output": str(out / "named.mp4"),
                               "seconds": results["good"]["seconds"], "seed": 11, "error": None}
    assert json.loads((out / "named.json").read_text())["options"]["seed"] == 11
    assert results["noaudio"]["status"] == "failed" and "missing.wav" in results["noaudio"]["error"]
    assert results["noaudio"]["seed"] == 3

    spec = tmp_path / "jobs.jsonl"
    spec.write_text("\n".join([
        json.dumps({"key": "a", "source_image": str(MEDIA / "happy.png"), "driven_audio": str(clip),
                    "expression_scale": 0.5}),
        json.dumps({"key": "b", "source_image": str(MEDIA / "happy.png"), "driven_audio": str(clip),
                    "pose_style": 99}),
        "{broken",
    ]))
    out = tmp_path / "jsonl_out"
    summary = _run(spec, out, runner)
    results = _results(out)
    assert [r["status"] for r in results.values()] == ["ok", "failed", "failed"] and not summary.ok
    assert "pose_style" in results["b"]["error"] and "not JSON" in results["line3"]["error"]
    assert json.loads((out / "a.json").read_text())["options"]["expression_scale"] == 0.5


def _batch_cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "sadtalker_core", "batch", *args], cwd=golden.REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_resume_after_the_process_is_killed(checkpoints_256, speech_clip, tmp_path):
    clip = speech_clip(0.04)
    spec = tmp_path / "jobs.jsonl"
    spec.write_text("\n".join(json.dumps({"key": k, "source_image": str(MEDIA / "happy.png"),
                                          "driven_audio": str(clip)}) for k in ("j1", "j2", "j3")))
    out = tmp_path / "out"
    flags = [str(spec), "--result_dir", str(out), "--checkpoint_dir", str(checkpoints_256), "--cpu",
             "--face_detector", "dlib", "--seed", "5"]
    first = _batch_cli(*flags, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and first.poll() is None:
            if (out / batch.RESULTS_NAME).is_file() and _results(out):
                break
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()
        os.killpg(first.pid, signal.SIGKILL)  # the batch and its ffmpeg, mid-job
    finally:
        first.wait(30)
        first.stdout.close()
        first.stderr.close()
    assert list(_results(out)) == ["j1"] and _results(out)["j1"]["status"] == "ok"
    assert not (out / "j3.mp4").exists()
    done_bytes = (out / "j1.mp4").read_bytes()
    # a cut copy under j2's name (as if written without the rename) must be redone, not skipped
    (out / "j2.mp4").write_bytes(done_bytes[: len(done_bytes) // 3])

    second = _batch_cli(*flags)
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr
    assert "2 ok, 0 failed, 1 skipped" in stdout
    results = _results(out)
    assert [results[k]["status"] for k in ("j1", "j2", "j3")] == ["skipped", "ok", "ok"]
    assert results["j1"]["seed"] == 5 and results["j1"]["output"] == str(out / "j1.mp4")
    assert (out / "j1.mp4").read_bytes() == done_bytes  # untouched
    assert (out / "j2.mp4").read_bytes() == done_bytes  # same inputs, same seed: the same video again
    assert sorted(p.name for p in out.iterdir()) == ["j1.json", "j1.mp4", "j2.json", "j2.mp4", "j3.json",
                                                     "j3.mp4", "results.jsonl"]  # no partial file left
    assert "[3/3]" in stderr or "3/3 done" in stderr  # plain progress lines when not on a terminal


def test_cli_usage_errors(tmp_path):
    proc = _batch_cli(str(tmp_path / "none.jsonl"))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--result_dir is required" in stderr
    proc = _batch_cli(str(tmp_path / "none.jsonl"), "--result_dir", str(tmp_path / "out"), "--pose_style", "99")
    _, stderr = proc.communicate(timeout=120)
    # a bad flag is a usage error of the whole batch, named as typed on the command line
    assert proc.returncode == 2 and "error: --pose_style: got 99, expected a value from 0 to 45." in stderr
    assert not (tmp_path / "out").exists()
    proc = _batch_cli(str(tmp_path / "none.jsonl"), "--result_dir", str(tmp_path / "out"))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "does not exist" in stderr


# -------------------------------------------------------------------------------------------------- ray

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from sadtalker_core.frontends.batch_ray import package_runtime_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=package_runtime_env())
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_same_files_and_results_as_the_local_run(local_ray, runner, checkpoints_256, speech_clip,
                                                               tmp_path):
    clip = speech_clip(0.08)
    spec = tmp_path / "jobs.jsonl"
    spec.write_text("\n".join([
        json.dumps({"key": "one", "source_image": str(MEDIA / "happy.png"), "driven_audio": str(clip)}),
        json.dumps({"key": "two", "source_image": str(MEDIA / "happy.png"), "driven_audio": str(clip),
                    "seed": 8, "pose_style": 5}),
        json.dumps({"key": "lost", "source_image": str(MEDIA / "happy.png"), "driven_audio": "nowhere.wav"}),
    ]))
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    summary = _run(spec, local_out, runner)
    # the local run's CPU threads: on a CPU the bytes depend on the thread count (see batch --threads)
    threads = str(torch.get_num_threads())
    code = batch.main([str(spec), "--result_dir", str(ray_out), "--checkpoint_dir", str(checkpoints_256), "--cpu",
                       "--face_detector", "dlib", "--seed", "3", "--ray", "auto", "--threads", threads, "--quiet"])
    assert code == 1 and not summary.ok  # the same exit status: one job failed

    def comparable(folder: Path) -> dict:
        return {k: {**r, "seconds": None, "output": r["output"] and Path(r["output"]).relative_to(folder).as_posix(),
                    "error": r["error"] and r["error"].replace(str(folder), "<out>")}
                for k, r in _results(folder).items()}

    assert comparable(ray_out) == comparable(local_out)
    assert [r["status"] for r in _results(ray_out).values()] == ["ok", "ok", "failed"]
    for name in ("one.mp4", "two.mp4"):
        assert (ray_out / name).read_bytes() == (local_out / name).read_bytes(), name
    assert json.loads((ray_out / "two.json").read_text())["options"] == \
        json.loads((local_out / "two.json").read_text())["options"]
    assert sorted(p.name for p in ray_out.iterdir()) == sorted(p.name for p in local_out.iterdir())


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_on_a_terminal_plain_lines_otherwise(terminal):
    import io

    stream = io.StringIO()
    display = batch._Display(stream, terminal)
    outcome = batch.JobOutcome("a", "ok", "/out/a.mp4", 1.25, 3)
    for event in (batch.BatchEvent("start", "a", 2, 0), batch.BatchEvent("stage", "a", 2, 0, "render", 1, 3),
                  batch.BatchEvent("stage", "a", 2, 0, "render", 2, 3),
                  batch.BatchEvent("done", "a", 2, 1, outcome=outcome)):
        display(event)
    display.close()
    text = stream.getvalue()
    if terminal:
        assert "\r" in text and "batch" in text and "1/2" in text and "a: render" in text and "2/3" in text
    else:
        assert text.splitlines() == ["[1/2] a: render", "[1/2] a: ok 1.2 s /out/a.mp4 (1/2 done)"]


def test_a_rest_row_keeps_the_config_it_was_validated_into(tmp_path):
    from sadtalker_core.options import GenerationConfig

    config = GenerationConfig.from_options(pose_style=7)
    job = batch.BatchJob("k", "p.png", "s.wav", config, tmp_path / "k.mp4")
    task = batch.prepare(job, {"pose_style": 1})
    assert task.config.pose_style == 7 and task.config.seed is not None  # the random seed is fixed here
    assert task.config.replace(seed=None) == config
