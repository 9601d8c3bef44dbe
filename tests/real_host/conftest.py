"""Fixtures for the tests inside a REAL WebUI (tools/webui_host.py does the unpacking, venv and start/stop).

    SADTALKER_REAL_HOST        a shared host name (a1111-v1.8.0, a1111-v1.10.1, forge-dfdcbab), a .tar.gz or a
                               WebUI source folder (a git clone); default a1111-v1.8.0 from ../shared/hosts
    SADTALKER_REAL_HOST_WORK   where to unpack and run (default: pytest's temporary folder)

Nothing here skips: a host that cannot be prepared or started fails the tests that need it, with the reason.
One host runs at a time (2 cores); it starts once per set of extra arguments and stops at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from realhost_support import RealHost, webui_host

TIMINGS: dict = {}  # prepare / venv / start seconds of this session's host, printed at the end


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.realhost)


@pytest.fixture(scope="session")
def real_host(tmp_path_factory, checkpoint_factory):
    work = Path(os.environ["SADTALKER_REAL_HOST_WORK"]) if os.environ.get("SADTALKER_REAL_HOST_WORK") \
        else tmp_path_factory.mktemp("real_host")
    work.mkdir(parents=True, exist_ok=True)
    host = RealHost(work, checkpoint_factory)
    TIMINGS["host"] = host.info.name
    TIMINGS.update(host.timings)
    yield host
    host.stop()
    TIMINGS.update(host.timings)


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("real host")
        terminalreporter.write_line(json.dumps({k: round(v, 1) if isinstance(v, float) else v
                                                for k, v in TIMINGS.items()}))


@pytest.fixture(scope="session")
def default_host(real_host) -> webui_host.Host:
    """The host with the recipe's arguments only (no --disable-safe-unpickle, no auth)."""
    return real_host.running(())


