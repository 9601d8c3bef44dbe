"""--api-auth on a real host: the SadTalker routes refuse requests without credentials and accept them with.
(Runs after test_real_host_webui.py: the host restarts once with the extra argument.)"""

from __future__ import annotations

import pytest

from realhost_support import http

CREDENTIALS = ("tester", "s3cret")


@pytest.fixture(scope="module")
def auth_host(real_host):
    return real_host.running(("--api-auth", ":".join(CREDENTIALS)))


@pytest.mark.parametrize("method, route", [("GET", "/sadtalker/v1/status"), ("GET", "/sadtalker/v1/options"),
                                           ("GET", "/sadtalker/v1/progress"), ("POST", "/sadtalker/v1/interrupt"),
                                           ("POST", "/sadtalker/v1/generate")])
def test_routes_refuse_without_credentials(auth_host, method, route):
    body = {} if method == "POST" else None
    assert http(auth_host, method, route, body)[0] == 401
    assert http(auth_host, method, route, body, auth=("tester", "wrong"))[0] == 401


def test_routes_accept_with_credentials(auth_host):
    status, body = http(auth_host, "GET", "/sadtalker/v1/status", auth=CREDENTIALS)
    assert status == 200 and body["checkpoints"]["found"]["256"]
    # past the auth check, the request itself is judged: an empty body is a 422 naming the image field
    status, body = http(auth_host, "POST", "/sadtalker/v1/generate", {}, auth=CREDENTIALS)
    assert status == 422 and body["field"] == "image", body
    # the host's own API takes the same credentials (the extension did not replace its auth)
    assert http(auth_host, "GET", "/sdapi/v1/options")[0] == 401
    assert http(auth_host, "GET", "/sdapi/v1/options", auth=CREDENTIALS)[0] == 200
