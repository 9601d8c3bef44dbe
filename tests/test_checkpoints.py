"""The checkpoint loader on files in the official formats: selection rules, exact loading of the synthetic
weights (new and old sets, two seeds), damaged / foreign / malicious files, download and verification."""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import http.server
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import golden
from conftest import NEW_SET, OLD_SET
from sadtalker_core.runtime import checkpoint_files, download, network_loading, weight_files
from sadtalker_core.errors import (CheckpointMismatchError, CheckpointNotFoundError, CorruptCheckpointError,
                                   OptionError)

ST256, ST512 = checkpoint_files.safetensors_name(256), checkpoint_files.safetensors_name(512)
MAP70, MAP73 = "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar"
RC_URL = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc/"


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).touch()
    return folder


def _synth(file: str, seed: int, section: str | None = None, prefix: str | None = None):
    return golden.synth_state({"manifest": f"manifests/{file}.json", "seed": seed,
                               "section": section or "", "strip_prefix": prefix})


def _expected_state(source: checkpoint_files.CheckpointSource, seed: int):
    """What synth_weights puts into that section of that file."""
    if source.is_safetensors:
        return _synth(source.path.name, seed, "", source.section + ".")
    return _synth(source.path.name, seed, source.section)


def _assert_loaded_exactly(net: torch.nn.Module, expected: dict, network: str, where: str) -> None:
    allowed = tuple(network_loading.unused_checkpoint_prefixes(network))
    ours = net.state_dict()
    assert set(ours) == {k for k in expected if not k.startswith(allowed)}, where
    for key, tensor in ours.items():
        assert tensor.dtype == expected[key].dtype and torch.equal(tensor, expected[key]), f"{where}: {key}"


# ------------------------------------------------------------------------------------------ selection

@pytest.mark.parametrize("preprocess,mapping,coeff_nc", [
    ("crop", MAP70, 70), ("extcrop", MAP70, 70), ("resize", MAP70, 70), ("full", MAP73, 73), ("extfull", MAP73, 73)])
@pytest.mark.parametrize("size", [256, 512])
def test_new_set_selection(tmp_path, size, preprocess, mapping, coeff_nc):
    folder = _touch(tmp_path, *NEW_SET)
    found = checkpoint_files.locate_checkpoints(folder, size=size, preprocess=preprocess)
    st = checkpoint_files.safetensors_name(size)
    assert {n: (s.path.name, s.section) for n, s in found.sources.items()} == {
        "face_recon": (st, "face_3drecon"), "expnet": (st, "audio2exp"), "posevae": (st, "audio2pose"),
        "kp_detector": (st, "kp_extractor"), "generator": (st, "generator"), "mapping_net": (mapping, "mapping")}
    assert found.coeff_nc == coeff_nc and not found.old_version and not found.note
    assert found.files == (folder / st, folder / mapping)


def test_old_version_selection(tmp_path):
    folder = _touch(tmp_path, *NEW_SET, *OLD_SET)
    found = checkpoint_files.locate_checkpoints(folder, preprocess="full", old_version=True)
    assert {n: (s.path.name, s.section) for n, s in found.sources.items()} == {
        "face_recon": ("epoch_20.pth", "net_recon"), "expnet": ("auido2exp_00300-model.pth", "model"),
        "posevae": ("auido2pose_00140-model.pth", "model"),
        "kp_detector": ("facevid2vid_00189-model.pth.tar", "kp_detector"),
        "generator": ("facevid2vid_00189-model.pth.tar", "generator"),
        "he_estimator": ("facevid2vid_00189-model.pth.tar", "he_estimator"), "mapping_net": (MAP73, "mapping")}
    assert found.old_version and found.coeff_nc == 73
    with pytest.raises(OptionError, match="256"):
        checkpoint_files.locate_checkpoints(folder, size=512, old_version=True)


def test_old_set_is_the_fallback_for_256_only(tmp_path):
    folder = _touch(tmp_path, *OLD_SET)
    found = checkpoint_files.locate_checkpoints(folder)
    assert found.old_version and ST256 in found.note
    assert found.sources["generator"].path.name == "facevid2vid_00189-model.pth.tar"
    with pytest.raises(CheckpointNotFoundError, match=ST512):
        checkpoint_files.locate_checkpoints(folder, size=512)
    (folder / "epoch_20.pth").unlink()  # incomplete old set: ask for the new file, not the old ones
    with pytest.raises(CheckpointNotFoundError) as caught:
        checkpoint_files.locate_checkpoints(folder)
    assert ST256 in str(caught.value) and "epoch_20.pth," not in str(caught.value).split("Searched")[0]


def test_missing_files_error_names_files_folders_and_urls(tmp_path):
    first, second = _touch(tmp_path / "a"), _touch(tmp_path / "b", MAP73)
    with pytest.raises(CheckpointNotFoundError) as caught:
        checkpoint_files.locate_checkpoints([first, second], size=512, preprocess="crop")
    text = str(caught.value)
    for needed in (ST512, MAP70, str(first.resolve()), str(second.resolve()), RC_URL + ST512, RC_URL + MAP70,
                   "optional", "v0.0.2"):
        assert needed in text, f"{needed!r} not in:\n{text}"
    assert MAP73 not in text.split("Searched")[0]
    assert isinstance(caught.value, FileNotFoundError)


def test_files_are_found_per_file_across_folders(tmp_path):
    first, second = _touch(tmp_path / "a", ST256), _touch(tmp_path / "b", ST256, MAP70)
    found = checkpoint_files.locate_checkpoints([first, second])
    assert found.files == (first / ST256, second / MAP70)


def test_renamed_file_is_missing(tmp_path):
    folder = _touch(tmp_path, "SadTalker_V0.0.2_256.safetensors.bak", MAP70)
    with pytest.raises(CheckpointNotFoundError) as caught:
        checkpoint_files.locate_checkpoints(folder)
    text = str(caught.value)
    assert f"files: {ST256}." in text and str(folder.resolve()) in text and RC_URL + ST256 in text


@pytest.mark.parametrize("kwargs", [{"size": 384}, {"preprocess": "crop "}, {"preprocess": "Full"}])
def test_bad_options(tmp_path, kwargs):
    with pytest.raises(OptionError):
        checkpoint_files.locate_checkpoints(_touch(tmp_path, *NEW_SET), **kwargs)


# ------------------------------------------------------------------- synthetic official files, full size

@pytest.fixture(scope="module")
def synthetic_folders(checkpoint_factory, tmp_path_factory):
    """``folders(seed, "new"|"new512"|"old")``: a folder with that seed's files of one set, written once."""
    @functools.lru_cache(maxsize=None)
    def folders(seed: int, kind: str) -> Path:
        names = {"new": (ST256, MAP70, MAP73), "new512": (ST512, MAP70, MAP73), "old": OLD_SET}[kind]
        return checkpoint_factory.folder(tmp_path_factory.mktemp(f"{kind}{seed}"), names=names, seed=seed)
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_new_and_old_sets_load_the_synthetic_weights_exactly(synthetic_folders, seed):
    new = checkpoint_files.locate_checkpoints(synthetic_folders(seed, "new"), size=256, preprocess="crop")
    old = checkpoint_files.locate_checkpoints(synthetic_folders(seed, "old"), size=256, preprocess="crop",
                                         old_version=True)
    new_nets = network_loading.build_networks(new)
    assert set(new_nets) == {"face_recon", "expnet", "posevae", "kp_detector", "generator", "mapping_net"}
    for name, net in new_nets.items():
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        _assert_loaded_exactly(net, _expected_state(new.sources[name], seed), name, f"new set seed {seed}")
    new_states = {name: net.state_dict() for name, net in new_nets.items()}
    del new_nets

    old_nets = network_loading.build_networks(old)
    assert set(old_nets) == set(new_states) | {"he_estimator"}
    for name, net in old_nets.items():
        _assert_loaded_exactly(net, _expected_state(old.sources[name], seed), name, f"old set seed {seed}")
        if name in new_states:  # old == new for the same seed
            assert net.state_dict().keys() == new_states[name].keys()
            assert all(torch.equal(t, new_states[name][k]) for k, t in net.state_dict().items()), name


@pytest.mark.slow
def test_512_full_loads_its_own_renderer_and_the_73_channel_mapping(synthetic_folders):
    seed = 0
    found = checkpoint_files.locate_checkpoints(synthetic_folders(seed, "new512"), size=512, preprocess="full")
    nets = network_loading.build_networks(found, names=["kp_detector", "mapping_net", "expnet"])
    for name, net in nets.items():
        _assert_loaded_exactly(net, _expected_state(found.sources[name], seed), name, "512 full")
    assert nets["mapping_net"].state_dict()["first.0.weight"].shape[1] == 73
    kp256 = _synth(ST256, seed, "", "kp_extractor.")
    assert not torch.equal(nets["kp_detector"].state_dict()["kp.weight"], kp256["kp.weight"])


@pytest.mark.slow
def test_only_requested_sections_are_read(synthetic_folders, monkeypatch):
    found = checkpoint_files.locate_checkpoints(synthetic_folders(0, "new"))
    read = []
    original = weight_files.read_safetensors_sections
    monkeypatch.setattr(weight_files, "read_safetensors_sections",
                        lambda path, prefixes: read.append(tuple(prefixes)) or original(path, prefixes))
    states = network_loading.load_network_states(found, names=["expnet", "face_recon"])
    assert list(states) == ["expnet", "face_recon"] and read == [("audio2exp", "face_3drecon")]
    assert set(states["expnet"]) == set(_synth(ST256, 0, "", "audio2exp."))


@pytest.mark.slow
def test_truncated_copy_of_the_full_safetensors(synthetic_folders, tmp_path):
    source = synthetic_folders(0, "new") / ST256
    assert source.stat().st_size == download.OFFICIAL_FILES[ST256].size
    folder = _touch(tmp_path, MAP70)
    with open(source, "rb") as src, open(folder / ST256, "wb") as dst:
        dst.write(src.read(4 << 20))
    with pytest.raises(CorruptCheckpointError) as caught:
        network_loading.load_network_states(checkpoint_files.locate_checkpoints(folder), names=["expnet"])
    text = str(caught.value)
    assert str(folder / ST256) in text and "truncated" in text and "725,066,984" in text and RC_URL + ST256 in text


@pytest.mark.slow
def test_verify_reports_synthetic_hashes_but_they_still_load(synthetic_folders):
    folder = synthetic_folders(0, "new")
    results = {r.name: r for r in download.verify_checkpoints(folder, [MAP70])}
    assert results[MAP70].status in ("truncated", "corrupt") and not results[MAP70].ok
    nets = network_loading.build_networks(checkpoint_files.locate_checkpoints(folder), names=["mapping_net"])
    _assert_loaded_exactly(nets["mapping_net"], _synth(MAP70, 0, "mapping"), "mapping_net", MAP70)


# ---------------------------------------------------------------------------------- damaged files

def _small_safetensors(path: Path, tensors: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def _expnet_tensors() -> dict:
    return {"audio2exp." + k: v for k, v in _synth(ST256, 0, "", "audio2exp.").items()}


def _raw_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _valid_header_bytes() -> bytes:
    header = json.dumps({"a.x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize("content,problem", [
    (b"\x10\x00\x00", "too small"),
    (struct.pack("<Q", 10 ** 9) + b"{}", "header claims"),
    (struct.pack("<Q", 6) + b"{nope}", "not valid JSON"),
    (_valid_header_bytes() + bytes(10), "truncated"),
    (_valid_header_bytes() + bytes(16) + b"junk", "after the"),
], ids=["too-small", "header-beyond-file", "bad-json", "data-truncated", "trailing-bytes"])
def test_damaged_safetensors(tmp_path, content, problem):
    path = _raw_file(tmp_path / ST256, content)
    with pytest.raises(CorruptCheckpointError) as caught:
        weight_files.read_safetensors_sections(path, ["audio2exp"])
    text = str(caught.value)
    assert str(path) in text and problem in text and "725,066,984" in text and "download it again" in text


@pytest.mark.parametrize("name", [ST256, MAP70])
def test_git_lfs_pointer(tmp_path, name):
    path = _raw_file(tmp_path / name, b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    reader = weight_files.read_safetensors_sections if name == ST256 else weight_files.read_pickle_sections
    with pytest.raises(CorruptCheckpointError, match="Git LFS pointer") as caught:
        reader(path, ["mapping"])
    assert RC_URL + name in str(caught.value)


def test_cut_short_small_safetensors(tmp_path):
    whole = _small_safetensors(tmp_path / "whole" / ST256, _expnet_tensors())
    data = whole.read_bytes()
    folder = _touch(tmp_path / "cut", MAP70)
    _raw_file(folder / ST256, data[: len(data) - 1000])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        network_loading.build_networks(checkpoint_files.locate_checkpoints(folder), names=["expnet"])


def test_wrong_shape_names_key_shapes_and_file(tmp_path):
    tensors = _expnet_tensors()
    tensors["audio2exp.mapping1.weight"] = tensors["audio2exp.mapping1.weight"].reshape(577, 64)
    folder = _touch(tmp_path, MAP70)
    _small_safetensors(folder / ST256, tensors)
    with pytest.raises(CheckpointMismatchError) as caught:
        network_loading.build_networks(checkpoint_files.locate_checkpoints(folder), names=["expnet"])
    text = str(caught.value)
    assert "mapping1.weight: file (577, 64) vs network (64, 577)" in text
    assert str(folder / ST256) in text and "audio2exp" in text and "ExpNet" in text


def test_small_valid_file_loads_and_missing_prefix_is_reported(tmp_path):
    folder = _touch(tmp_path, MAP70)
    _small_safetensors(folder / ST256, _expnet_tensors())
    found = checkpoint_files.locate_checkpoints(folder)
    nets = network_loading.build_networks(found, names=["expnet"])
    _assert_loaded_exactly(nets["expnet"], _synth(ST256, 0, "", "audio2exp."), "expnet", "small file")
    with pytest.raises(CheckpointMismatchError) as caught:
        network_loading.load_network_states(found, names=["generator"])
    assert "generator." in str(caught.value) and "audio2exp" in str(caught.value)


class _RunsCode:
    """Pickles to a call that creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_pickle_with_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "code-ran"
    folder = _touch(tmp_path / "ckpt", ST256)
    path = folder / MAP70
    torch.save({"mapping": _synth(MAP70, 0, "mapping"), "epoch": 229, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CorruptCheckpointError) as caught:
        network_loading.build_networks(checkpoint_files.locate_checkpoints(folder), names=["mapping_net"])
    text = str(caught.value)
    assert not marker.exists()
    assert str(path) in text and "refuses to execute code" in text and "exec" in text and RC_URL + MAP70 in text
    # the payload is real: an unrestricted unpickler would have run it
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def _host_whitelist_load(filename, *args, **kwargs):
    """What A1111's / SD.Next's replacement ``torch.load`` does with a file a current torch wrote: its
    whitelist does not know ``.format_version`` / ``byteorder``, so it prints an error and returns None."""
    return None


def _host_unsafe_load(filename, *args, **kwargs):
    """A host that turned weights-only loading off (``--disable-safe-unpickle``, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD)."""
    kwargs["weights_only"] = False
    return _original_torch_load(filename, *args, **kwargs)


_original_torch_load = torch.load


def test_loading_does_not_depend_on_a_patched_torch_load(tmp_path, monkeypatch):
    mapping = _synth(MAP70, 0, "mapping")
    folder = _touch(tmp_path / "ckpt", ST256)
    torch.save({"mapping": mapping, "epoch": 229}, folder / MAP70)  # the current torch's zip format
    monkeypatch.setattr(torch, "load", _host_whitelist_load)
    assert torch.load(folder / MAP70) is None  # the patch is in force
    nets = network_loading.build_networks(checkpoint_files.locate_checkpoints(folder), names=["mapping_net"])
    _assert_loaded_exactly(nets["mapping_net"], mapping, "mapping_net", "under a host's torch.load")


def test_a_host_that_disabled_safe_loading_still_gets_no_code_run(tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    folder = _touch(tmp_path / "ckpt", ST256)
    torch.save({"mapping": _synth(MAP70, 0, "mapping"), "payload": _RunsCode(marker)}, folder / MAP70)
    monkeypatch.setattr(torch, "load", _host_unsafe_load)
    with pytest.raises(CorruptCheckpointError, match="refuses to execute code"):
        network_loading.build_networks(checkpoint_files.locate_checkpoints(folder), names=["mapping_net"])
    assert not marker.exists()


def test_unknown_top_level_entries_are_ignored(tmp_path):
    mapping = _synth(MAP70, 0, "mapping")
    folder = _touch(tmp_path, ST256)
    optimizer = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}
    torch.save({"mapping": mapping, "discriminator": {"w": torch.ones(2)}, "optimizer_mapping": optimizer,
                "epoch": 229, "note": "trained"}, folder / MAP70)
    nets = network_loading.build_networks(checkpoint_files.locate_checkpoints(folder), names=["mapping_net"])
    _assert_loaded_exactly(nets["mapping_net"], mapping, "mapping_net", "extra entries")


def test_damaged_and_foreign_pickles(tmp_path):
    folder = _touch(tmp_path, ST256)
    path = folder / MAP70
    torch.save({"mapping": {"first.0.bias": torch.zeros(1024)}, "epoch": 1}, path)
    data = path.read_bytes()
    checkpoint_set = checkpoint_files.locate_checkpoints(folder)
    for broken, problem in ((data[: len(data) // 2], "cannot be read"), (b"", "cannot be read"),
                            (b"not a checkpoint at all", "cannot be read")):
        path.write_bytes(broken)
        with pytest.raises(CorruptCheckpointError, match=problem) as caught:
            network_loading.load_network_states(checkpoint_set, names=["mapping_net"])
        assert str(path) in str(caught.value) and "155,521,183" in str(caught.value)
    torch.save({"model": {}, "epoch": 1}, path)
    with pytest.raises(CorruptCheckpointError, match="no 'mapping' entry.*model, epoch"):
        network_loading.load_network_states(checkpoint_set, names=["mapping_net"])
    torch.save({"mapping": {"first.0.bias": [1, 2]}}, path)
    with pytest.raises(CorruptCheckpointError, match="not a state dict of tensors"):
        network_loading.load_network_states(checkpoint_set, names=["mapping_net"])


# ---------------------------------------------------------------------------------------- load_strict

class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)
        self.norm = torch.nn.BatchNorm2d(3)


def _toy_state(**changes) -> dict:
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v.clone()
             for k, v in _Toy().state_dict().items()}
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


def test_load_strict_loads_and_tolerates_missing_bn_counter():
    net = _Toy()
    network_loading.load_strict(net, _toy_state(**{"norm.num_batches_tracked": None, "head.x": torch.ones(1)}),
                            source="toy.pth", ignore_prefixes=("head",))
    assert torch.equal(net.conv.weight, torch.full((3, 2, 1, 1), 0.5))
    assert torch.equal(net.norm.running_var, torch.full((3,), 0.5))


def test_load_strict_lists_each_kind_of_problem():
    net = _Toy()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = _toy_state(**{"conv.bias": None, "conv.weight": torch.zeros(3, 2, 3, 3), "extra.w": torch.ones(1),
                          "headless.w": torch.ones(1)})
    with pytest.raises(CheckpointMismatchError) as caught:
        network_loading.load_strict(net, state, source="some.pth [model]", ignore_prefixes=("head",))
    text = str(caught.value)
    assert "some.pth [model]" in text and "_Toy" in text
    assert "missing: conv.bias" in text and "extra.w" in text and "headless.w" in text
    assert "conv.weight: file (3, 2, 3, 3) vs network (3, 2, 1, 1)" in text
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()), "nothing loaded on failure"


def test_load_strict_shows_only_the_first_keys():
    state = _toy_state(**{f"stray{i}.w": torch.ones(1) for i in range(20)})
    with pytest.raises(CheckpointMismatchError, match=r"(?s)20 unexpected.*and 12 more"):
        network_loading.load_strict(_Toy(), state)


# ------------------------------------------------------------------------------- download and verify

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _CutShortHandler(_QuietHandler):
    """Announces more bytes than it sends, then closes: a dropped connection."""

    def do_GET(self):
        data = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data) + 4096))
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True


@contextlib.contextmanager
def _serving(root: Path, handler=_QuietHandler, lifetime_s: float = 60.0):
    """A loopback HTTP server for ``root`` that shuts itself down after ``lifetime_s`` at the latest."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    deadline = threading.Timer(lifetime_s, server.shutdown)
    deadline.daemon = True
    deadline.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        deadline.cancel()
        server.shutdown()
        server.server_close()
        thread.join(10)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def release(tmp_path):
    """A fake release folder (``<tag>/<file>``) with two small files and a catalogue of their true sizes and
    digests."""
    root = tmp_path / "release"
    payloads = {MAP70: os.urandom(3 << 20) + b"mapping", "epoch_20.pth": os.urandom(1 << 20)}
    catalogue = {}
    for name, data in payloads.items():
        entry = download.OFFICIAL_FILES[name]
        _raw_file(root / entry.release / name, data)
        catalogue[name] = download.OfficialFile(name, entry.release, len(data), hashlib.sha256(data).hexdigest())
    return root, catalogue


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.partial")) if folder.exists() else []


def test_download_verifies_and_renames(release, tmp_path, monkeypatch):
    root, catalogue = release
    target = tmp_path / "ckpt"
    seen = []
    with _serving(root) as url:
        monkeypatch.setenv(download.BASE_URL_ENV, url)
        paths = download.ensure_checkpoints(target, list(catalogue), lambda *a: seen.append(a),
                                            catalogue=catalogue)
    assert paths == [target / name for name in catalogue]
    for name, entry in catalogue.items():
        assert (target / name).read_bytes() == (root / entry.release / name).read_bytes()
    assert _leftovers(target) == []
    assert seen[-1] == ("download epoch_20.pth", 1 << 20, 1 << 20)
    assert {s[0] for s in seen} == {f"download {n}" for n in catalogue}


def test_download_skips_present_files(release, tmp_path):
    root, catalogue = release
    target = _touch(tmp_path / "ckpt", *catalogue)
    assert download.ensure_checkpoints(target, list(catalogue), catalogue=catalogue,
                                       base_url=_closed_port_url()) == [target / n for n in catalogue]


@pytest.mark.parametrize("failure", ["hash", "size", "cut-short", "404"])
def test_failed_download_leaves_nothing_but_a_resumable_cut(release, tmp_path, failure):
    root, catalogue = release
    entry = catalogue[MAP70]
    if failure == "hash":
        catalogue[MAP70] = download.OfficialFile(MAP70, entry.release, entry.size, "0" * 64)
    elif failure == "size":
        catalogue[MAP70] = download.OfficialFile(MAP70, entry.release, entry.size + 1, entry.sha256)
    elif failure == "404":
        (root / entry.release / MAP70).unlink()
    target = tmp_path / "ckpt"
    handler = _CutShortHandler if failure == "cut-short" else _QuietHandler
    with _serving(root, handler) as url, pytest.raises(CheckpointNotFoundError) as caught:
        download.ensure_checkpoints(target, [MAP70, "epoch_20.pth"], catalogue=catalogue, base_url=url)
    text = str(caught.value)
    assert not (target / MAP70).exists()
    # a cut keeps what arrived for the next attempt to resume; a wrong or absent file leaves nothing
    assert _leftovers(target) == ([MAP70 + ".partial"] if failure == "cut-short" else [])
    reasons = {"hash": ["SHA-256"], "size": ["bytes, the official file has"], "404": ["HTTP 404"],
               "cut-short": ["the transfer stopped after", "more expected"]}[failure]  # (IncompleteRead)
    assert any(r in text for r in reasons) and str(target) in text
    assert f"{url}/v0.0.2-rc/{MAP70}" in text and f"{url}/v0.0.2/epoch_20.pth" in text


def test_no_network_message(tmp_path, monkeypatch):
    monkeypatch.setenv(download.BASE_URL_ENV, _closed_port_url())
    folder = tmp_path / "ckpt"
    with pytest.raises(CheckpointNotFoundError) as caught:
        checkpoint_files.locate_checkpoints(folder, size=512, preprocess="full", download=True)
    text = str(caught.value)
    assert "no connection" in text and str(folder) in text and ST512 in text and MAP73 in text
    assert f"/v0.0.2-rc/{ST512}" in text and f"/v0.0.2-rc/{MAP73}" in text
    assert _leftovers(folder) == []


def test_locate_downloads_missing_files_on_first_use(tmp_path, monkeypatch):
    root = tmp_path / "release" / "v0.0.2-rc"
    _small_safetensors(root / ST256, _expnet_tensors())
    _raw_file(root / MAP70, b"only its presence matters to locate")
    for name in (ST256, MAP70):
        data = (root / name).read_bytes()
        monkeypatch.setitem(download.OFFICIAL_FILES, name, download.OfficialFile(
            name, "v0.0.2-rc", len(data), hashlib.sha256(data).hexdigest()))
    folder = tmp_path / "ckpt"
    with _serving(tmp_path / "release") as url:
        monkeypatch.setenv(download.BASE_URL_ENV, url)
        found = checkpoint_files.locate_checkpoints(folder, download=True)
    assert found.files == (folder / ST256, folder / MAP70)
    nets = network_loading.build_networks(found, names=["expnet"])
    _assert_loaded_exactly(nets["expnet"], _synth(ST256, 0, "", "audio2exp."), "expnet", "downloaded")


def test_verify_statuses_and_cache(release, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root, catalogue = release
    folder = tmp_path / "ckpt"
    for name, entry in catalogue.items():
        _raw_file(folder / name, (root / entry.release / name).read_bytes())
    catalogue["auido2exp_00300-model.pth"] = download.OfficialFile("auido2exp_00300-model.pth", "v0.0.2")
    _raw_file(folder / "auido2exp_00300-model.pth", b"no digest published")
    catalogue["epoch_20.pth"] = download.OfficialFile("epoch_20.pth", "v0.0.2", 1 << 20, "f" * 64)
    catalogue[ST256] = download.OfficialFile(ST256, "v0.0.2-rc", 10, None)
    hashed = []

    def verify(names=None):
        results = download.verify_checkpoints(folder, names, lambda stage, *_: hashed.append(stage),
                                              catalogue=catalogue)
        return {r.name: r.status for r in results}

    everything = list(catalogue)
    assert verify(everything) == {MAP70: "ok", "epoch_20.pth": "corrupt",
                                  "auido2exp_00300-model.pth": "no known hash", ST256: "missing"}
    assert (folder / download.VERIFY_CACHE_NAME).is_file()
    first_pass = len(hashed)
    assert first_pass >= 3
    assert verify() == {MAP70: "ok", "epoch_20.pth": "corrupt", "auido2exp_00300-model.pth": "no known hash"}
    assert len(hashed) == first_pass, "cached digests must not be recomputed"

    data = (folder / MAP70).read_bytes()
    (folder / MAP70).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    os.utime(folder / MAP70, ns=(1, 1))  # a changed mtime invalidates the cache entry
    assert verify([MAP70]) == {MAP70: "corrupt"}
    assert hashed[first_pass:] == [f"verify {MAP70}"] * len(hashed[first_pass:]) and len(hashed) > first_pass


def test_verify_cache_falls_back_to_user_cache(release, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root, catalogue = release
    folder = tmp_path / "ckpt"
    _raw_file(folder / MAP70, (root / "v0.0.2-rc" / MAP70).read_bytes())
    (folder / download.VERIFY_CACHE_NAME).mkdir()  # the folder's cache cannot be written (as if read-only)
    hashed = []
    for _ in range(2):
        results = download.verify_checkpoints(folder, [MAP70], lambda stage, *_: hashed.append(stage),
                                              catalogue=catalogue)
        assert [r.status for r in results] == ["ok"]
    assert set(hashed) == {f"verify {MAP70}"}
    user_cache = list((tmp_path / "cache" / "sadtalker").glob("verify-*.json"))
    assert len(user_cache) == 1 and MAP70 in json.loads(user_cache[0].read_text())


class _RangeHandler(_QuietHandler):
    """Honours ``Range: bytes=N-`` (206 + Content-Range); while ``cut_after`` is set, the first full response
    announces the whole file but sends only that many bytes. Requests are logged in ``seen``."""

    cut_after: int | None = None
    seen: list = []

    def do_GET(self):
        data = Path(self.translate_path(self.path)).read_bytes()
        wanted = self.headers.get("Range")
        type(self).seen.append(wanted)
        if wanted:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        cut, type(self).cut_after = type(self).cut_after, None
        self.wfile.write(data if cut is None else data[:cut])
        self.close_connection = True


def test_download_resumes_a_cut_transfer_with_a_range_request(release, tmp_path):
    root, catalogue = release
    target = tmp_path / "ckpt"
    handler = type("Handler", (_RangeHandler,), {"cut_after": 1 << 20, "seen": []})
    with _serving(root, handler) as url:
        with pytest.raises(CheckpointNotFoundError) as caught:
            download.ensure_checkpoints(target, [MAP70], catalogue=catalogue, base_url=url)
        assert "resumes" in str(caught.value) and f"{url}/v0.0.2-rc/{MAP70}" in str(caught.value)
        kept = (target / (MAP70 + ".partial")).stat().st_size
        assert 0 < kept <= 1 << 20
        seen = []
        download.ensure_checkpoints(target, [MAP70], lambda *a: seen.append(a), catalogue=catalogue, base_url=url)
    assert handler.seen == [None, f"bytes={kept}-"]  # the second request asked only for the rest
    assert (target / MAP70).read_bytes() == (root / "v0.0.2-rc" / MAP70).read_bytes()
    assert _leftovers(target) == [] and seen[0][1] > kept and seen[-1][1:] == (catalogue[MAP70].size,) * 2
    assert [r.status for r in download.verify_checkpoints(target, [MAP70], catalogue=catalogue)] == ["ok"]


def test_resumed_bytes_that_do_not_match_the_hash_are_deleted(release, tmp_path):
    root, catalogue = release
    target = tmp_path / "ckpt"
    target.mkdir()
    genuine = (root / "v0.0.2-rc" / MAP70).read_bytes()
    (target / (MAP70 + ".partial")).write_bytes(b"\xff" * 1000)  # a stale partial file from another file
    handler = type("Handler", (_RangeHandler,), {"seen": []})
    with _serving(root, handler) as url, pytest.raises(CheckpointNotFoundError) as caught:
        download.ensure_checkpoints(target, [MAP70], catalogue=catalogue, base_url=url)
    assert handler.seen == ["bytes=1000-"] and "SHA-256" in str(caught.value) and "deleted" in str(caught.value)
    assert _leftovers(target) == [] and not (target / MAP70).exists()
    with _serving(root, handler) as url:  # the next attempt starts from zero and succeeds
        download.ensure_checkpoints(target, [MAP70], catalogue=catalogue, base_url=url)
    assert (target / MAP70).read_bytes() == genuine


def test_verify_says_truncated_and_corrupt(release, tmp_path):
    root, catalogue = release
    folder = tmp_path / "ckpt"
    data = (root / "v0.0.2-rc" / MAP70).read_bytes()
    _raw_file(folder / MAP70, data[:-10])
    _raw_file(folder / "epoch_20.pth", (root / "v0.0.2" / "epoch_20.pth").read_bytes() + b"x")
    statuses = {r.name: r.status for r in download.verify_checkpoints(folder, list(catalogue), catalogue=catalogue)}
    assert statuses == {MAP70: "truncated", "epoch_20.pth": "corrupt"}


def test_command_line(tmp_path, monkeypatch, capsys):
    folder = _raw_file(tmp_path / "ckpt" / MAP70, b"x" * 100).parent
    assert download.main(["verify", str(folder)]) == 1
    assert f"truncated      {MAP70}  100 of" in capsys.readouterr().out
    monkeypatch.setenv(download.BASE_URL_ENV, _closed_port_url())
    assert download.main(["download", str(folder), "--size", "256"]) == 1
    err = capsys.readouterr().err
    assert ST256 in err and MAP73 in err and MAP70 not in err.split("Download them")[0].split("Missing")[1]
    run = subprocess.run([sys.executable, "-m", "sadtalker_core.runtime.download", "verify", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120, cwd=golden.REPO)
    assert run.returncode == 1 and "no official checkpoint files" in run.stdout


def test_download_and_verify_subcommands(release, tmp_path, monkeypatch, capsys):
    from sadtalker_core.frontends import cli

    root, catalogue = release
    folder = tmp_path / "ckpt"
    monkeypatch.setenv(download.BASE_URL_ENV, _closed_port_url())
    assert cli.main(["download", "--dir", str(folder), "--size", "256"]) == 1
    err = capsys.readouterr().err  # offline: which files, which folder, which URLs
    assert ST256 in err and MAP70 in err and MAP73 in err and str(folder.resolve()) in err
    assert f"/v0.0.2-rc/{ST256}" in err and "no connection" in err and _leftovers(folder) == []

    monkeypatch.setattr(download, "OFFICIAL_FILES", {**download.OFFICIAL_FILES, **catalogue})
    _raw_file(folder / MAP70, (root / "v0.0.2-rc" / MAP70).read_bytes())
    _raw_file(folder / "epoch_20.pth", b"short")
    (folder / (ST256 + ".partial")).write_bytes(b"x" * 7)
    assert cli.main(["verify", "--dir", str(folder), "--files", MAP70, "epoch_20.pth", ST256]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok             {MAP70}")
    assert out[1].startswith("truncated      epoch_20.pth  5 of")
    assert out[2].startswith(f"missing        {ST256}") and "7 bytes of a cut download kept" in out[2]
