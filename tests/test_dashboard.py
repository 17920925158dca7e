"""The dashboard without a browser: smoothing and downsampling against naive references, the
tolerant log follower, the run statuses, the JSON views, and the server against every form of
path traversal, every other method and its headers (a real server on 127.0.0.1)."""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dashboard_helpers import staging_of, write_huge_run, write_png, write_run
from helpers import assert_one_line_error, cli_env, optional_import, run_cli
from nnscratch.dashboard.runlog import RunLog
from nnscratch.dashboard.runs import folder_status, scan
from nnscratch.dashboard.series import debiased_ema, downsample_minmax
from nnscratch.dashboard.views import Dashboard
from nnscratch.training.sinks import read_jsonl_chunk

# ---------------------------------------------------------------------------------- series


def naive_debiased_ema(y, beta):
    """The textbook loop: s = beta s + (1 - beta) y over the finite values, divided by 1 - beta^t."""
    out, s, t = [], 0.0, 0
    for v in y:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        t += 1
        s = beta * s + (1 - beta) * v
        out.append(s / (1 - beta ** t))
    return np.array(out)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.9, 0.999])
def test_debiased_ema_is_the_textbook_loop(beta):
    rng = np.random.default_rng(1)
    y = rng.normal(2.0, 0.5, 500)
    y[[3, 100, 101]] = [np.nan, np.inf, np.nan]  # diverged steps: left out, NaN at their place
    np.testing.assert_allclose(debiased_ema(y, beta), naive_debiased_ema(y, beta), rtol=1e-12, equal_nan=True)


def test_debiasing_removes_the_pull_toward_zero():
    y = np.full(50, 3.0)
    smoothed = debiased_ema(y, 0.9)
    np.testing.assert_allclose(smoothed, 3.0, rtol=1e-12)  # a constant stays itself from the first value on
    biased = 0.1 * np.cumsum(0.9 ** np.arange(50)[::-1] * 3.0)[-1]  # the plain EMA after 50 steps is still low
    assert biased < 3.0 * 0.995 and smoothed[0] == 3.0
    with pytest.raises(ValueError):
        debiased_ema(y, 1.0)


def naive_downsample(x, y, max_points):
    """Per bucket (consecutive indices, n/b each), the first index of its min and of its max."""
    n = len(y)
    if n <= max_points:
        return x, y
    b = max_points // 2
    keep = set()
    for k in range(b):
        lo, hi = k * n // b, (k + 1) * n // b
        finite = [i for i in range(lo, hi) if math.isfinite(y[i])]
        if not finite:
            keep.add(lo)
            continue
        keep.add(min(finite, key=lambda i: (y[i], i)))
        keep.add(min(finite, key=lambda i: (-y[i], i)))
    idx = sorted(keep)
    return x[idx], y[idx]


@pytest.mark.parametrize("n,max_points", [(10, 20), (1000, 100), (1001, 37), (5000, 2000)])
def test_downsampling_is_the_naive_bucket_loop(n, max_points):
    rng = np.random.default_rng(n)
    x, y = np.arange(1, n + 1), rng.normal(size=n)
    y[rng.integers(0, n, 5)] = np.nan
    if n > 100:
        y[50:60] = np.nan  # a bucket of only NaN keeps its first point
    gx, gy = downsample_minmax(x, y, max_points)
    rx, ry = naive_downsample(x, y, max_points)
    np.testing.assert_array_equal(gx, rx)
    np.testing.assert_array_equal(gy, ry)
    assert len(gx) <= max_points


def test_100000_points_keep_their_extremes():
    x = np.arange(1, 100_001)
    y = np.sin(x / 500.0)
    y[77_776], y[12_345] = 9.0, -7.0
    gx, gy = downsample_minmax(x, y, 2000)
    assert len(gx) <= 2000
    assert gy.max() == 9.0 and gx[gy.argmax()] == 77_777
    assert gy.min() == -7.0 and gx[gy.argmin()] == 12_346
    assert np.all(np.diff(gx) > 0)


# ---------------------------------------------------------------------------------- the log


def test_read_jsonl_chunk_keeps_a_half_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"kind": "a"}\n{not json\n[1, 2]\n\n{"kind": "b"}\n{"kind": "c", "ha')
    events, offset, problems = read_jsonl_chunk(path)
    assert [e["kind"] for e in events] == ["a", "b"]
    assert offset == path.read_bytes().rindex(b"\n") + 1
    assert len(problems) == 2 and problems[0].startswith("byte 14: not JSON") and "not a JSON object" in problems[1]
    with open(path, "ab") as f:
        f.write(b'lf": 1}\n')
    events, offset2, problems = read_jsonl_chunk(path, offset)
    assert events == [{"kind": "c", "half": 1}] and not problems and offset2 == path.stat().st_size
    # a line that alone fills the chunk is skipped, not waited for forever
    path.write_bytes(b"x" * 100)
    assert read_jsonl_chunk(path, 0, max_bytes=64)[1:] == (64, ["byte 0: a line longer than 64 bytes, skipped"])


def test_the_run_log_follows_appends_warnings_rewrites_and_deletion(tmp_path):
    folder = write_run(tmp_path / "run", epochs=2, steps_per_epoch=10, finished=False)
    log = RunLog(folder / "metrics.jsonl")
    assert log.update() and not log.update()  # nothing new: no change
    assert sorted(log.engines) == ["numpy", "torch"]
    assert log.engines["numpy"].steps == list(range(1, 21))
    assert log.engines["torch"].epochs[2]["val_accuracy"] == pytest.approx(0.7)
    assert log.engines["numpy"].gradient_norms["0.weight"] == {1: 1.0, 2: 0.5}
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"kind": "steps", "engine": "numpy", "first_step": 21, "loss": [1.5, null], "lr": [0.1, 0.1]}\n')
        f.write('{"kind": "steps", "engine": "numpy", "first_st')  # half written
    version = log.version
    assert log.update() and log.version > version
    assert log.engines["numpy"].steps[-2:] == [21, 22] and math.isnan(log.engines["numpy"].loss[-1])
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('ep": 23, "loss": [1.0], "lr": [0.1]}\n{oops\n{"kind": "steps", "engine": "numpy"}\n')
    log.update()
    assert log.engines["numpy"].steps[-1] == 23
    assert log.warning_count == 2 and "not JSON" in log.warnings[0] and "cannot be read" in log.warnings[1]
    # the file replaced by a shorter one (a run written again): read again from its start
    write_run(tmp_path / "other", epochs=1, steps_per_epoch=5, engines=("numpy",), finished=False)
    os.replace(tmp_path / "other" / "metrics.jsonl", folder / "metrics.jsonl")
    log.update()
    assert log.engines["numpy"].steps == [1, 2, 3, 4, 5] and "replaced" in log.warnings[0]
    (folder / "metrics.jsonl").unlink()
    assert log.update() and log.missing and log.engines["numpy"].steps == [1, 2, 3, 4, 5]


def test_run_statuses_from_the_files(tmp_path):
    write_run(tmp_path / "done")
    write_run(tmp_path / "cut", finished=False)
    (tmp_path / "cut" / "INTERRUPTED.md").write_text("# Interrupted nnscratch run\n")
    write_run(tmp_path / "killed", finished=False)  # no run_end, no metrics.json: interrupted
    write_run(staging_of(tmp_path, "live"), finished=False)  # staging, lock held by a live process (us)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_run(staging_of(tmp_path, "gone", int(dead.stdout)), finished=False)
    (tmp_path / "notes").mkdir()  # a folder that is no run
    (tmp_path / ".hidden").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    write_run(outside)
    (tmp_path / "link").symlink_to(outside)  # a run folder pointing out of RUNS_DIR: not listed
    runs = scan(tmp_path)
    assert sorted(runs) == [".gone.staging-test1234", ".live.staging-test1234", "cut", "done", "killed"]
    dash = Dashboard(tmp_path)
    listed = {r["name"]: r for r in dash.run_list()["runs"]}
    assert {n: r["status"] for n, r in listed.items()} == {"done": "finished", "cut": "interrupted", "killed":
                                                           "interrupted", "live": "running", "gone": "interrupted"}
    assert listed["done"]["best_accuracy"] == pytest.approx(0.8) and listed["done"]["dataset"] == "mnist"
    assert listed["done"]["summary"] == "hidden 16 relu, sgd lr 0.1, batch 32, 3 epochs"
    assert folder_status(runs["killed"], {"numpy": "finished", "torch": "finished"}) == "finished"
    shutil.rmtree(outside)


# ---------------------------------------------------------------------------------- the views


def test_a_run_view_holds_every_chart_and_answers_unchanged(tmp_path):
    write_run(tmp_path / "run", epochs=3, steps_per_epoch=50)
    dash = Dashboard(tmp_path)
    view = dash.run_view("run", points=1000, smoothing=0.0)
    numpy, torch = view["engines"]["numpy"], view["engines"]["torch"]
    assert len(numpy["loss"]["x"]) == 150 and numpy["smoothed"]["y"] == numpy["loss"]["y"]  # beta 0: the raw curve
    assert numpy["val_accuracy"] == {"x": [50, 100, 150], "epoch": [1, 2, 3], "y": pytest.approx([0.6, 0.7, 0.8])}
    assert numpy["lr"]["y"][:2] == [0.1, 0.1] and numpy["lr"]["y"][-1] == pytest.approx(0.1 / 3)
    assert numpy["gradient_norms"]["0.weight"]["y"] == pytest.approx([1.0, 0.5, 1 / 3])
    expected = [1e-7 * (k % 7) for k in range(1, 151)]  # |numpy - torch| from the helper's curves
    np.testing.assert_allclose(view["divergence"]["y"], expected, atol=1e-12)
    assert view["figures"] == ["numpy_loss_curve.png"] and view["status"] == "finished"
    assert dash.run_view("run", 1000, 0.0, since=view["version"]) == {"unchanged": True, "version": view["version"]}
    smooth = dash.run_view("run", 1000, 0.9)["engines"]["numpy"]["smoothed"]["y"]
    assert smooth[0] == numpy["loss"]["y"][0] and smooth[10] > numpy["loss"]["y"][10]  # lags a falling curve
    assert dash.run_view("nothing-here") is None
    json.dumps(view, allow_nan=False)  # strict JSON


def test_a_huge_run_is_downsampled_with_its_spike(tmp_path):
    write_huge_run(tmp_path / "huge")
    view = Dashboard(tmp_path).run_view("huge", points=2000, smoothing=0.6)
    loss = view["engines"]["numpy"]["loss"]
    assert view["engines"]["numpy"]["steps"] == 100_000 and len(loss["x"]) <= 2000
    assert max(loss["y"]) == 9.0 and loss["x"][loss["y"].index(9.0)] == 77_777


# ---------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real server on 127.0.0.1 (a free port) over a runs folder with a finished run, a secret
    file beside the folder, and links pointing out of it."""
    optional_import("plotly")
    from nnscratch.dashboard.server import make_server, serve_in_background

    base = tmp_path_factory.mktemp("served")
    runs = base / "runs"
    write_run(runs / "small", epochs=1, steps_per_epoch=5)
    (base / "secret.txt").write_text("TOP-SECRET")
    write_png(base / "secret.png")
    (runs / "small" / "outside.png").symlink_to(base / "secret.png")
    write_run(base / "elsewhere")
    (runs / "escape").symlink_to(base / "elsewhere")
    server = make_server(runs, "127.0.0.1", 0)
    serve_in_background(server)
    yield server
    server.shutdown()
    server.server_close()


def request(server, method, path, headers=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def assert_safe_headers(headers):
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Content-Type")


def test_the_page_the_api_and_the_figures_are_served(served):
    status, headers, body = request(served, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"plotly.min.js" in body
    assert_safe_headers(headers)
    status, headers, body = request(served, "GET", "/static/plotly.min.js")
    import plotly

    assert status == 200 and body == (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert headers["Content-Type"].startswith("text/javascript")
    status, headers, body = request(served, "GET", "/api/runs")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [r["id"] for r in json.loads(body)["runs"]] == ["small"]
    status, headers, body = request(served, "GET", "/api/run/small?points=100&smoothing=0.5")
    assert status == 200 and len(json.loads(body)["engines"]["torch"]["loss"]["x"]) == 5
    status, headers, body = request(served, "GET", "/run/small/numpy_loss_curve.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    status, headers, body = request(served, "HEAD", "/api/runs")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    status, headers, body = request(served, "GET", "/api/run/deleted-run")
    assert status == 404 and "deleted" in json.loads(body)["error"]
    status, headers, body = request(served, "GET", "/api/run/small?smoothing=1.5")
    assert status == 400 and b"smoothing" in body and b"Traceback" not in body


TRAVERSALS = [
    "/../secret.txt", "/static/../../secret.txt", "/static/..%2f..%2fsecret.txt", "/static/%2e%2e/server.py",
    "/static/%2E%2E%2F%2E%2E%2Fsecret.txt", "/static/%252e%252e/server.py", "/static/..%5cserver.py",
    "/static/.%2e/runs.py", "/static/./app.js", "/run/small/..%2f..%2fsecret.txt", "/run/..%2fsecret.png/x.png",
    "/run/small/%2e%2e/%2e%2e/secret.png", "/run/%2Ftmp/secret.png", "/run/small//etc/passwd", "//etc/passwd",
    "/etc/passwd", "/run/small/%2Fetc%2Fpasswd", "/run/small/outside.png", "/run/escape/numpy_loss_curve.png",
    "/api/run/escape", "/api/run/..", "/api/run/%2e%2e", "/api/run/..%2F..%2Fsecret.txt", "/run/small/metrics.jsonl",
    "/run/small/metrics.json", "/run/small/%00.png", "/static/app.js%00.html", "/%c0%ae%c0%ae/secret.txt",
    "http://127.0.0.1/../secret.txt", "/static/plotly.min.js/../../secret.txt", "/runs.py", "/static/server.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_nothing_outside_the_runs_folder_is_served(served, path):
    status, headers, body = request(served, "GET", path)
    assert status == 404, (path, status)
    assert b"TOP-SECRET" not in body and b"Traceback" not in body and b"\x89PNG" not in body
    assert_safe_headers(headers)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"])
def test_only_get_and_head_are_answered(served, method):
    status, headers, body = request(served, method, "/api/runs")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert_safe_headers(headers)
    assert b"Traceback" not in body


def test_errors_carry_no_stack_trace(served, monkeypatch, capsys):
    def broken():
        raise RuntimeError("boom inside")

    monkeypatch.setattr(served.dashboard, "run_list", broken)
    status, headers, body = request(served, "GET", "/api/runs")
    assert status == 500 and body == b"500 internal error (see the server's output)\n"
    assert_safe_headers(headers)
    assert "RuntimeError: boom inside" in capsys.readouterr().err
    # a request line the standard library refuses itself
    import socket

    with socket.create_connection(served.server_address[:2], timeout=10) as s:
        s.sendall(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 414") and b"nosniff" in answer and b"Traceback" not in answer


def test_many_tabs_at_once_are_all_answered(served):
    """64 tabs polling together (threads, each its own connection): every answer whole and right."""
    from concurrent.futures import ThreadPoolExecutor

    def poll(k):
        status, _, body = request(served, "GET", f"/api/run/small?points={100 + k}&smoothing=0.{k % 10}")
        return status, len(json.loads(body)["engines"]["numpy"]["loss"]["x"])

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(poll, range(64)))
    assert answers == [(200, 5)] * 64


def test_a_run_deleted_while_served_is_a_404_not_a_crash(served):
    runs = served.dashboard.runs_dir
    write_run(runs / "brief", epochs=1, steps_per_epoch=3)
    assert request(served, "GET", "/api/run/brief")[0] == 200
    shutil.rmtree(runs / "brief")
    assert request(served, "GET", "/api/run/brief")[0] == 404
    assert request(served, "GET", "/api/runs")[0] == 200


# ---------------------------------------------------------------------------------- the command line


def test_the_dashboard_command_serves_and_warns_off_loopback(tmp_path):
    optional_import("plotly")
    write_run(tmp_path / "runs" / "one", epochs=1, steps_per_epoch=3)
    proc = subprocess.Popen([sys.executable, "-m", "nnscratch", "dashboard", str(tmp_path / "runs"), "--host", "0.0.0.0"],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"nnscratch dashboard: {tmp_path / 'runs'}/ at http://0.0.0.0:"), line
        port = int(line.split("http://0.0.0.0:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/runs")
        assert json.loads(conn.getresponse().read())["runs"][0]["id"] == "one"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "warning: --host 0.0.0.0" in stderr and "network" in stderr


def test_bad_dashboard_arguments_are_one_line(tmp_path):
    optional_import("plotly")
    (tmp_path / "file").write_text("x")
    result = run_cli(["dashboard", str(tmp_path / "file")], cwd=tmp_path)
    assert result.returncode == 2 and "is a file, not a folder" in assert_one_line_error(result.stderr)
    result = run_cli(["dashboard", "--port", "70000"], cwd=tmp_path)
    assert result.returncode == 2 and "not a port number" in assert_one_line_error(result.stderr)


def test_train_dashboard_serves_beside_the_run(mnist, tmp_path):
    """``--dashboard`` on a real (tiny) run: the URL line, the page's follow-the-run anchor, a run that finishes."""
    optional_import("plotly")
    result = run_cli(["train", "--train-subset", "640", "--epochs", "1", "--hidden", "8", "--quiet", "--dashboard",
                      "--out", str(tmp_path / "runs" / "tiny"), "--data-dir", str(mnist.source)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith("dashboard: "))
    assert line.split()[1].startswith("http://127.0.0.1:") and line.split()[1].endswith("/#name=tiny")
    assert (tmp_path / "runs" / "tiny" / "metrics.json").exists()
