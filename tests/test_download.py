"""The downloader against a local HTTP server: verified files land, bad transfers leave nothing.

One server on 127.0.0.1 serves a temporary folder; each sub-folder acts as one mirror:
``good/`` and ``bad/`` are served as they are, ``cut/`` sends a Content-Length for the whole
file but only half of the bytes and then closes the connection, ``stall/`` sends headers and
then nothing, ``missing/`` does not exist (404).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import _require_data
from helpers import encode_idx
from nnscratch.data import DATASETS, DownloadError, fetch, read_idx
from nnscratch.data.download import mirror_url
from nnscratch.errors import DataError

FILENAME = "tiny-images-idx3-ubyte.gz"
TIMEOUT = 2.0


class _Handler(SimpleHTTPRequestHandler):
    """Serves files; ``/cut/...`` is cut off halfway, ``/stall/...`` never sends its body."""

    def log_message(self, format, *args):  # keep the test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/cut/"):
            self._send_cut_off()
        elif self.path.startswith("/stall/"):
            self._stall()
        else:
            super().do_GET()

    def _send_cut_off(self):
        data = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _stall(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        self.server.release.wait(10)
        self.close_connection = True


class Mirrors:
    """A running server; ``url("good")`` is the base URL of the ``good/`` mirror."""

    def __init__(self, root: Path, port: int, requests: list[str]):
        self.root = root
        self.port = port
        self.requests = requests

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}/"

    def put(self, prefix: str, name: str, data: bytes) -> None:
        folder = self.root / prefix
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)


@pytest.fixture
def mirrors(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.daemon_threads = True
    server.requests = []
    server.release = threading.Event()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Mirrors(root, server.server_address[1], server.requests)
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def tiny():
    """(gzip bytes, raw IDX bytes, sha256 of the raw bytes) of a small synthetic image file."""
    images = np.random.default_rng(0).integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    raw = encode_idx(images)
    return gzip.compress(raw), raw, hashlib.sha256(raw).hexdigest()


@pytest.fixture
def dest(tmp_path):
    return tmp_path / "cache" / "tiny"


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def corrupt(data: bytes) -> bytes:
    """Flip a few bytes in the middle of ``data``."""
    flipped = bytearray(data)
    for i in range(len(data) // 2, len(data) // 2 + 4):
        flipped[i] ^= 0xFF
    return bytes(flipped)


def test_good_download_lands_verified(mirrors, tiny, dest):
    gz, raw, sha = tiny
    mirrors.put("good", FILENAME, gz)
    path = fetch(FILENAME, sha, dest, [mirrors.url("good")], progress=False, timeout=TIMEOUT)
    assert path == dest / FILENAME
    assert path.read_bytes() == gz  # kept as downloaded, compressed
    assert sorted(p.name for p in dest.iterdir()) == [FILENAME]
    assert read_idx(path).shape == (50, 28, 28)


def test_progress_bar_goes_to_stderr(mirrors, tiny, dest, capsys):
    gz, _, sha = tiny
    mirrors.put("good", FILENAME, gz)
    fetch(FILENAME, sha, dest, [mirrors.url("good")], progress=True, timeout=TIMEOUT)
    assert FILENAME in capsys.readouterr().err


def test_uncompressed_download_is_accepted(mirrors, tiny, dest):
    _, raw, sha = tiny
    mirrors.put("good", FILENAME, raw)
    path = fetch(FILENAME, sha, dest, [mirrors.url("good")], progress=False, timeout=TIMEOUT)
    assert path.read_bytes() == raw


@pytest.mark.parametrize("kind", ["flipped-gzip-bytes", "valid-gzip-wrong-content", "cut-off"])
def test_bad_mirror_falls_through(mirrors, tiny, dest, kind):
    gz, raw, sha = tiny
    mirror, sent = {"flipped-gzip-bytes": ("bad", corrupt(gz)),
                    "valid-gzip-wrong-content": ("bad", gzip.compress(corrupt(raw))),
                    "cut-off": ("cut", gz)}[kind]  # the server sends half of what /cut/ holds
    mirrors.put(mirror, FILENAME, sent)
    mirrors.put("good", FILENAME, gz)
    path = fetch(FILENAME, sha, dest, [mirrors.url(mirror), mirrors.url("good")],
                 progress=False, timeout=TIMEOUT)
    assert path.read_bytes() == gz
    assert mirrors.requests == [f"/{mirror}/{FILENAME}", f"/good/{FILENAME}"]
    assert sorted(p.name for p in dest.iterdir()) == [FILENAME]


def test_all_mirrors_bad(mirrors, tiny, dest):
    gz, _, sha = tiny
    mirrors.put("bad", FILENAME, corrupt(gz))
    mirrors.put("cut", FILENAME, gz)
    urls = [mirrors.url("missing"), mirrors.url("bad"), mirrors.url("cut")]
    with pytest.raises(DownloadError) as exc_info:
        fetch(FILENAME, sha, dest, urls, progress=False, timeout=TIMEOUT)
    message = str(exc_info.value)
    assert isinstance(exc_info.value, DataError)
    assert "\n" not in message
    for url in urls:
        assert mirror_url(url, FILENAME) in message
    assert "HTTP 404" in message
    assert f"got {len(gz) // 2:,} of {len(gz):,} bytes" in message
    assert "--data-dir DIR" in message and "NNSCRATCH_DATA_DIR" in message
    assert len(exc_info.value.attempts) == 3
    assert list(dest.iterdir()) == []  # no file, no temporary file


def test_unreachable_and_stalled_mirrors(mirrors, tiny, dest):
    _, _, sha = tiny
    dead = f"http://127.0.0.1:{closed_port()}/"
    mirrors.put("stall", FILENAME, b"never sent")
    with pytest.raises(DownloadError) as exc_info:
        fetch(FILENAME, sha, dest, [dead, mirrors.url("stall")], progress=False, timeout=0.5)
    message = str(exc_info.value)
    assert "cannot connect" in message
    assert "timed out" in message
    assert list(dest.iterdir()) == []


def test_no_mirrors(dest):
    with pytest.raises(DownloadError, match="no mirrors configured"):
        fetch(FILENAME, "0" * 64, dest, [], progress=False)


def test_mirror_url_joins_with_one_slash():
    assert mirror_url("http://h/a/", "f.gz") == "http://h/a/f.gz"
    assert mirror_url("http://h/a", "f.gz") == "http://h/a/f.gz"


def test_real_mnist_files_download_and_verify(mirrors, dest):
    """The real shared MNIST test files, served locally, verify against the registry hashes."""
    source = Path(os.environ.get("NNSCRATCH_DATA_DIR", "/nonexistent")) / "mnist"
    spec = DATASETS["mnist"]
    files = (spec.test_images, spec.test_labels)
    if not all((source / f.filename).is_file() for f in files):
        if _require_data():
            pytest.fail(f"real MNIST needed (NNSCRATCH_REQUIRE_DATA=1): not found in {source}")
        pytest.skip("real MNIST not found: set NNSCRATCH_DATA_DIR")
    (mirrors.root / "mnist").mkdir()
    for f in files:
        shutil.copyfile(source / f.filename, mirrors.root / "mnist" / f.filename)
        path = fetch(f.filename, f.sha256, dest, [mirrors.url("mnist")], progress=False,
                     timeout=TIMEOUT)
        assert path.read_bytes() == (source / f.filename).read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == sorted(f.filename for f in files)
    assert read_idx(dest / spec.test_images.filename).shape == (10000, 28, 28)
    # the training labels' checksum must not be accepted for the test labels
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch(spec.test_labels.filename, spec.train_labels.sha256, dest / "other",
              [mirrors.url("mnist")], progress=False, timeout=TIMEOUT)
    assert list((dest / "other").iterdir()) == []
