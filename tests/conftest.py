"""Shared fixtures: the real MNIST files, found through NNSCRATCH_DATA_DIR; an isolated cache;
a local HTTP server for download tests.

Tests that need real data skip when it cannot be found, except when NNSCRATCH_REQUIRE_DATA=1
(CI sets it): then they fail, so a CI run can never pass by skipping its data tests.
"""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest


def _require_data() -> bool:
    return os.environ.get("NNSCRATCH_REQUIRE_DATA", "") not in ("", "0")


@pytest.fixture(scope="session")
def mnist():
    """The MNIST dataset (50k/10k/10k split) from $NNSCRATCH_DATA_DIR, loaded once per session."""
    from nnscratch.data import load_dataset
    from nnscratch.errors import DataError

    data_dir = os.environ.get("NNSCRATCH_DATA_DIR")
    if not data_dir:
        msg = "real MNIST needed: set NNSCRATCH_DATA_DIR to the folder that holds mnist/"
        if _require_data():
            pytest.fail(msg + " (NNSCRATCH_REQUIRE_DATA=1)")
        pytest.skip(msg)
    try:
        return load_dataset("mnist", download=False, progress=False)
    except DataError as exc:
        if _require_data():
            pytest.fail(f"real MNIST needed (NNSCRATCH_REQUIRE_DATA=1): {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No test sees the real cache; NNSCRATCH_DATA_DIR is unset unless a test sets it.

    A data-test module opts in for every test with ``pytestmark = pytest.mark.usefixtures("isolated_env")``.
    """
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("NNSCRATCH_DATA_DIR", raising=False)


@pytest.fixture
def server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/served; yields (base URL, request log, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_GET(self):
            requests.append(self.path.rsplit("/", 1)[-1])
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests, root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
