"""``python -m sadtalker_core doctor``: runs, names a missing checkpoint folder with the command that fixes it,
finds a good folder, and flags a cut checkpoint file."""

from __future__ import annotations

from sadtalker_core.frontends import cli, doctor


def test_doctor_names_a_missing_checkpoint_folder(tmp_path, capsys):
    missing = tmp_path / "no_such_checkpoints"
    assert cli.main(["doctor", "--checkpoint_dir", str(missing)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("FAIL checkpoints"))
    assert str(missing) in line and "does not exist" in line
    assert f"fix: python -m sadtalker_core download --dir {missing}" in out
    for name in ("torch", "device", "ffmpeg", "fan detector", "dlib detector", "extra ray", "extra spandrel"):
        assert any(line.split(None, 1)[1].startswith(name) for line in out.splitlines() if line[:4].strip()), name
    assert "renderer precision float32" in out and "1 problem(s): checkpoints" in out.splitlines()[-1]
    assert not missing.exists()


def test_doctor_on_a_good_folder_and_a_cut_file(checkpoints_256, tmp_path):
    checks = {c.name: c for c in doctor.run_checks(checkpoints_256, "cpu")}
    assert checks["checkpoints 256"].status == doctor.OK and "SadTalker_V0.0.2_256.safetensors" in \
        checks["checkpoints 256"].detail
    assert checks["checkpoints 512"].status == doctor.WARN and "--size 512" in checks["checkpoints 512"].fix
    assert checks["ffmpeg"].status == doctor.OK and "ffmpeg version" in checks["ffmpeg"].detail
    assert checks["dlib detector"].status == doctor.OK

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "mapping_00229-model.pth.tar").write_bytes(b"x" * 10)
    (cut / "SadTalker_V0.0.2_256.safetensors.partial").write_bytes(b"x" * 10)
    checks = {c.name: c for c in doctor.run_checks(cut, "cpu")}
    assert checks["checkpoint files"].status == doctor.FAIL
    assert "mapping_00229-model.pth.tar truncated (10 of 155521183 bytes)" in checks["checkpoint files"].detail
    assert "resumes" in checks["checkpoint downloads"].fix
