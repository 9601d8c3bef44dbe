"""Our network trees against every checkpoint manifest of the kit: exactly the official keys, shapes and dtypes,
apart from the documented allow-list (``UNUSED_CHECKPOINT_PREFIXES`` of the network's module).

The manifests are discovered; a JSON file counts as a checkpoint manifest by its structure (``file``,
``format`` and ``sections`` with tensor lists), so digests and loader reports are skipped.
"""

from __future__ import annotations

import functools
import json

import pytest

import golden
from sadtalker_core.runtime import checkpoint_files, network_loading


def _is_checkpoint_manifest(data) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("file"), str) and "format" in data
            and isinstance(data.get("sections"), dict)
            and all(isinstance(s, dict) and isinstance(s.get("tensors"), list) for s in data["sections"].values()))


def _checkpoint_manifests() -> list[dict]:
    found = []
    for path in golden.manifest_paths():
        data = json.loads(path.read_text())
        if _is_checkpoint_manifest(data):
            found.append(data)
    return found


MANIFESTS = _checkpoint_manifests()


def _sections_of(manifest: dict) -> dict[str, list[dict]]:
    """{section: entries with keys relative to the network}; a flat safetensors file splits on the first '.'."""
    sw = golden.synth_weights()
    if manifest["format"] == "safetensors":
        sections: dict[str, list[dict]] = {}
        for entry in sw.manifest_entries(manifest, ""):
            head, _, rest = entry["key"].partition(".")
            sections.setdefault(head, []).append({**entry, "key": rest})
        return sections
    return {name: sw.manifest_entries(manifest, name) for name in manifest["sections"]}


CASES = [(m, network, section) for m in MANIFESTS
         for network, section in checkpoint_files.FILE_SECTIONS.get(m["file"], {}).items()]


@functools.lru_cache(maxsize=None)
def _tree(network: str, coeff_nc: int) -> dict[str, tuple[tuple[int, ...], str]]:
    net = network_loading.new_network(network, coeff_nc)
    return {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in net.state_dict().items()}


def test_kit_has_all_official_checkpoint_manifests():
    files = {m["file"] for m in MANIFESTS}
    assert files == set(checkpoint_files.FILE_SECTIONS), (
        f"manifests in {golden.kit_dir() / 'manifests'} cover {sorted(files)}, "
        f"the loader knows {sorted(checkpoint_files.FILE_SECTIONS)}")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m["file"] for m in MANIFESTS])
def test_every_section_has_a_network(manifest):
    mapped = set(checkpoint_files.FILE_SECTIONS[manifest["file"]].values())
    assert set(_sections_of(manifest)) == mapped


@pytest.mark.parametrize("manifest,network,section", CASES,
                         ids=[f"{m['file']}:{section}->{network}" for m, network, section in CASES])
def test_network_tree_matches_manifest(manifest, network, section):
    coeff_nc = checkpoint_files.MAPPING_FILES.get(manifest["file"], 70)
    ours = _tree(network, coeff_nc)
    allowed = tuple(p if p.endswith(".") else p + "." for p in network_loading.unused_checkpoint_prefixes(network))
    entries = _sections_of(manifest)[section]
    official = {e["key"]: (tuple(e["shape"]), e["dtype"].replace("torch.", "")) for e in entries
                if not (e["key"] + ".").startswith(allowed)}

    # every allow-list entry must name real official keys that our network really leaves out
    for prefix in allowed:
        assert any(e["key"].startswith(prefix) for e in entries), f"allow-list prefix {prefix} matches no key"
        assert not any(k.startswith(prefix) for k in ours), f"{network} builds {prefix}* but allow-lists it"

    missing = sorted(set(official) - set(ours))
    extra = sorted(set(ours) - set(official))
    assert not missing and not extra, f"{network}: missing {missing[:10]}, not in the file {extra[:10]}"
    wrong = [(k, official[k], ours[k]) for k in official if official[k] != ours[k]]
    assert not wrong, f"{network}: (key, official (shape, dtype), ours): {wrong[:10]}"
