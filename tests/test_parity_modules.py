"""Numeric parity of every network against the golden kit's ``modules/`` sidecars.

Each sidecar names its ``kind``; the runner for that kind (``module_runners_*.py``) builds our network,
loads the synthetic weights the sidecar describes and compares every recorded output.
"""

import pytest

import golden
import module_runners_audio
import module_runners_render

RUNNERS = {**module_runners_audio.RUNNERS, **module_runners_render.RUNNERS}
SIDECARS = golden.sidecars("modules")


@pytest.mark.parity
def test_kit_has_module_sidecars():
    assert SIDECARS, f"no modules/*.json in {golden.kit_dir()}"


@pytest.mark.parity
@pytest.mark.parametrize("sidecar", SIDECARS, ids=[p.stem for p in SIDECARS])
def test_module_parity(sidecar):
    meta, arrays = golden.load_sidecar(sidecar)
    kind = meta["kind"]
    assert kind in RUNNERS, f"{sidecar.name}: no parity runner for kind {kind!r}"
    RUNNERS[kind](meta, arrays, golden.synth_state(meta["weights"]), sidecar)
