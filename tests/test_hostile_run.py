"""What a hostile tester tried on compare/train (issue 19): every input ends in one line (exit 2 for
bad input, 1 for a failing disk, 130/143 for Ctrl-C/SIGTERM, even during start-up), never a
traceback; a run folder is written whole or not at all; links are followed, never replaced.
Tiny runs (200 images, one epoch, 8 hidden units)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from nnscratch import api
from nnscratch.errors import UsageError
from nnscratch.files.atomic import atomic_path, write_json
from nnscratch.files.run_folder import INTERRUPTED, RunFolder, folder_state
from nnscratch.threads import usable_cores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import assert_one_line_error, cli_env, one_line, run_python  # noqa: E402

TINY = ["--train-subset", "200", "--epochs", "1", "--hidden", "8", "--quiet"]


def _main(argv: list[str]) -> tuple[int, str, str]:
    """``nnscratch ARGV`` in-process: ``(exit code, stdout, stderr)``."""
    from nnscratch.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _tiny(verb: str, out: Path, mnist, *extra: str) -> tuple[int, str, str]:
    argv = [verb, *TINY, "--data-dir", mnist.source, "--out", str(out), *extra]
    return _main(argv)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden_beside(out: Path) -> list[str]:
    """Staging folders, lock files, renamed-aside runs: whatever a run might leave beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- a run folder, whole


def test_a_finished_run_is_replaced_only_with_overwrite_and_then_whole(mnist, tmp_path):
    out = tmp_path / "run"
    code, _, err = _tiny("compare", out, mnist)
    assert code == 0, err
    before = _snapshot(out)
    assert {"torch_model.safetensors", "twin_divergence.png", "report.md"} <= set(before)

    code, stdout, err = _tiny("compare", out, mnist, "--seed", "1")
    assert code == 2 and "already holds a finished run; pass --overwrite" in assert_one_line_error(err, stdout)
    assert _snapshot(out) == before

    code, _, err = _tiny("train", out, mnist, "--overwrite")  # the NumPy engine alone, over the comparison
    assert code == 0, err
    after = _snapshot(out)
    assert not [name for name in after if name.startswith(("torch_", "twin_"))]  # no stale files of torch
    assert list(json.loads(after["metrics.json"])["engines"]) == ["numpy"]
    assert _hidden_beside(out) == []


@pytest.mark.parametrize("failing", ["model", "report"])
def test_a_disk_that_fills_while_writing_keeps_the_earlier_run_whole(mnist, tmp_path, monkeypatch, failing):
    out = tmp_path / "run"
    assert _tiny("train", out, mnist)[0] == 0
    before = _snapshot(out)
    if failing == "model":  # safetensors' own error, as a full disk gives it
        from safetensors import SafetensorError

        def full(*args, **kwargs):
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')

        monkeypatch.setattr("nnscratch.files.model_files.write_safetensors", full)
        name = "numpy_model.safetensors"
    else:  # the last file of the set
        def full(path, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr("nnscratch.report.write_report", full)
        name = "report.md"
    code, stdout, err = _tiny("train", out, mnist, "--overwrite", "--seed", "7")
    line = assert_one_line_error(err, stdout)
    assert code == 1 and "No space left on device" in line and name in line and str(out) in line
    assert _snapshot(out) == before and _hidden_beside(out) == []


_HOLDER = """
import sys, time
from nnscratch.files.run_folder import RunFolder
with RunFolder(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_two_runs_into_one_folder_at_once_the_second_is_refused(mnist, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], env=cli_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, stdout, err = _tiny("compare", out, mnist)
        line = assert_one_line_error(err, stdout)
        assert code == 2 and f"--out {out} is being written by another nnscratch run (pid {holder.pid})" in line
    finally:
        holder.kill()
        holder.wait(30)
    assert not out.exists()


def test_out_at_the_root_writes_nothing_there():
    before = set(os.listdir("/"))
    code, stdout, err = _main(["compare", *TINY, "--out", "/"])
    assert code == 2 and "--out / is a system folder" in assert_one_line_error(err, stdout)
    assert set(os.listdir("/")) == before


def _image_folder(root: Path, classes=("cat", "dog"), n: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_out_inside_a_folder_dataset_is_refused(tmp_path):
    images = _image_folder(tmp_path / "images")
    code, stdout, err = _main(["train", "--quiet", "--dataset", f"folder:{images}", "--out", str(images / "run")])
    assert code == 2 and f"is inside {images}, which the run reads" in assert_one_line_error(err, stdout)
    assert sorted(p.name for p in images.iterdir()) == ["cat", "dog"]


def test_a_class_name_the_font_lacks_is_one_warning_line(tmp_path):
    images = _image_folder(tmp_path / "images", classes=("猫", "犬"))
    code, _, err = _main(["train", "--quiet", "--epochs", "1", "--hidden", "4", "--dataset", f"folder:{images}",
                          "--out", str(tmp_path / "run")])
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("nnscratch: warning: the figures' font lacks 2 character"), err
    assert "Glyph" not in err and "UserWarning" not in err
    assert "猫" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- interrupted runs, end to end


def _stop_after_first_epoch(folder: RunFolder | None, exc: BaseException):
    def on_epoch(engine, record):
        if folder is not None:
            (folder.checkpoint_dir / f"{engine}-epoch-{record['epoch']}.safetensors").write_text("weights")
        raise exc
    return on_epoch


def test_ctrl_c_mid_run_keeps_the_finished_run_and_puts_the_checkpoints_beside_it(mnist, tmp_path):
    out = tmp_path / "run"
    api.train(epochs=1, hidden=[8], train_subset=200, out=out, data=mnist)
    before = _snapshot(out)
    with pytest.raises(KeyboardInterrupt):  # no checkpoint yet: nothing of the run is kept
        api.train(epochs=2, hidden=[8], train_subset=200, out=out, overwrite=True, data=mnist,
                  on_epoch=_stop_after_first_epoch(None, KeyboardInterrupt()))
    assert _snapshot(out) == before and _hidden_beside(out) == []

    from nnscratch.errors import Terminated

    folder = RunFolder(out, overwrite=True)
    with pytest.raises(Terminated):  # SIGTERM, as the command line raises it
        api.train(epochs=2, hidden=[8], train_subset=200, out=folder, data=mnist,
                  on_epoch=_stop_after_first_epoch(folder, Terminated()))
    assert _snapshot(out) == before  # the finished run is kept whole
    kept = tmp_path / "run.interrupted"
    assert folder.kept_beside and folder.final == kept and folder_state(kept) == "interrupted"
    assert sorted(p.name for p in kept.iterdir()) == [INTERRUPTED, "checkpoints", "metrics.jsonl"]
    assert [p.name for p in (kept / "checkpoints").iterdir()] == ["numpy-epoch-1.safetensors"]
    assert _hidden_beside(out) == []


# --------------------------------------------------------------------------- links and streams


def test_a_link_target_is_written_and_the_link_kept(tmp_path):
    target = tmp_path / "real" / "metrics.json"
    target.parent.mkdir()
    target.write_text("{}")
    link = tmp_path / "metrics.json"
    link.symlink_to(target)
    write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    dangling = tmp_path / "new.json"
    dangling.symlink_to(tmp_path / "real" / "new-target.json")
    write_json(dangling, {"b": 2})
    assert dangling.is_symlink() and json.loads((tmp_path / "real" / "new-target.json").read_text()) == {"b": 2}


def test_a_pipe_is_written_into_not_replaced_and_a_socket_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_json(fifo, {"c": 3})
    reader.join(30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and json.loads(got[0]) == {"c": 3}
    with pytest.raises(UsageError, match="a stream"):
        with atomic_path(fifo):
            pass
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(UsageError) as exc:
            write_json(sock_path, {})
        assert "is a socket, not a file" in one_line(exc)


def _model(tmp_path: Path) -> Path:
    from nnscratch.files.model_files import save_model
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec

    spec = mlp_spec(input_dim=784, hidden=(8,), num_classes=10)
    return save_model(tmp_path / "m.safetensors", initial_state(spec, np.random.default_rng(0)), spec,
                      engine="numpy", dtype="float32", dataset="mnist")


def test_evaluate_json_into_dev_stdout_redirected_to_a_file_keeps_every_line(mnist, tmp_path):
    captured = tmp_path / "captured.txt"
    with captured.open("w") as stdout:
        proc = subprocess.run([sys.executable, "-m", "nnscratch", "evaluate", "--model", str(_model(tmp_path)),
                               "--data-dir", mnist.source, "--json", "/dev/stdout"], cwd=tmp_path, env=cli_env(),
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = captured.read_text()
    head, _, body = text.partition("{")
    assert "accuracy" in head and len(head.splitlines()) == 2  # the printed lines first, then the JSON
    assert json.loads("{" + body)["engine"] == "numpy"
    assert os.path.islink("/dev/stdout") or stat.S_ISCHR(os.stat("/dev/stdout").st_mode)


def test_evaluate_json_through_a_link_keeps_the_link(mnist, tmp_path):
    model = _model(tmp_path)
    target = tmp_path / "results" / "eval.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "eval.json"
    link.symlink_to(target)
    code, _, err = _main(["evaluate", "--model", str(model), "--data-dir", mnist.source, "--json", str(link)])
    assert code == 0, err
    assert link.is_symlink() and json.loads(target.read_text())["engine"] == "numpy"


# --------------------------------------------------------------------------- numbers


def test_threads_beyond_the_cores_are_capped_with_one_line(mnist, tmp_path):
    code, stdout, err = _tiny("train", tmp_path / "run", mnist, "--threads", "1000000")
    assert code == 0, err
    cores = usable_cores()
    assert [line for line in err.splitlines() if line.strip()] == \
        [f"nnscratch: warning: 1,000,000 threads asked for, but this process may use {cores} core"
         f"{'s' if cores != 1 else ''}; using {cores}"]
    assert f", {cores} threads" in stdout


def test_the_largest_seed_runs_on_every_engine(mnist, tmp_path):
    code, _, err = _tiny("compare", tmp_path / "run", mnist, "--seed", str(2**63 - 1))
    assert code == 0, err


@pytest.mark.parametrize("seed", [2**63, 2**64, 2**70, -1])
def test_seeds_outside_64_bits_are_one_line(seed):
    with pytest.raises(UsageError) as exc:
        api.compare(seed=seed)
    assert "--seed must be a whole number from 0 to 2**63 - 1" in one_line(exc)


@pytest.mark.parametrize("text, key", [("betas = 0.9\noptimizer = 'adam'", "betas"),
                                       ("lr_schedule = 'multistep'\nlr_milestones = 5", "lr_milestones"),
                                       ("hidden = [8.5]", "hidden"), ("lr = [0.1]", "lr"),
                                       ("epochs = [1, 2]", "epochs"), ("seed = 18446744073709551615", "seed")])
def test_a_config_value_of_the_wrong_shape_is_one_line(tmp_path, text, key):
    path = tmp_path / "c.toml"
    path.write_text(text + "\n")
    code, stdout, err = _main(["compare", "--config", str(path), "--out", str(tmp_path / "run")])
    line = assert_one_line_error(err, stdout)
    assert code == 2 and line.startswith(f"nnscratch: error: {path}: {key} ") and ", got " in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings", [{"betas": 0.9, "optimizer": "adam"}, {"lr_milestones": 5},
                                      {"hidden": 5.5}, {"hidden": "8"}, {"epochs": [1]}, {"lr": (0.1,)}])
def test_a_setting_of_the_wrong_shape_from_the_api_is_one_line(settings):
    with pytest.raises(UsageError) as exc:
        api.config(**settings)
    assert ", got " in one_line(exc)


# --------------------------------------------------------------------------- the Python API


@pytest.mark.parametrize("call, words", [
    (lambda: api.compare(out=42), "out must be a folder path"),
    (lambda: api.train(out=["runs"]), "out must be a folder path"),
    (lambda: api.write_report(None, "x"), "write_report() takes the Run"),
    (lambda: api.write_report("run", "x"), "write_report() takes the Run"),
    (lambda: api.compare(out="x", overwrite="yes"), "overwrite must be True or False"),
    (lambda: api.compare(out=RunFolder("x"), overwrite=True), "overwrite is a setting of the RunFolder"),
], ids=["out=42", "out=list", "write_report(None)", "write_report(str)", "overwrite=str", "RunFolder+overwrite"])
def test_bad_api_arguments_are_usage_errors(tmp_path, monkeypatch, call, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as exc:
        call()
    assert words in one_line(exc)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM


@pytest.mark.parametrize("moment", ["imports", "loading"])
@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_start_up_is_one_line(mnist, tmp_path, signum, code, word, moment):
    """The signal comes while the command line imports the library (seen in ``-X importtime``'s
    lines: the settings module is imported inside main()), or after its header, while the data loads."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "nnscratch", "compare", "--data-dir",
                             mnist.source, "--out", str(out)], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reached = threading.Event()

    def read_stderr():
        for line in proc.stderr:
            lines.append(line)
            if moment == "imports" and line.rstrip().endswith("nnscratch.run.config"):
                reached.set()

    def read_stdout():
        for line in proc.stdout:
            if moment == "loading" and line.startswith("  output:"):
                reached.set()

    readers = [threading.Thread(target=read_stderr), threading.Thread(target=read_stdout)]
    for reader in readers:
        reader.start()
    try:
        assert reached.wait(300), "".join(lines)
        proc.send_signal(signum)
        assert proc.wait(120) == code, "".join(lines)
    finally:
        proc.kill()
        for reader in readers:
            reader.join(30)
    said = [line.rstrip() for line in lines if line.strip() and not line.startswith("import time:")]
    assert said == [f"nnscratch: {word}"], "".join(lines)
    assert not out.exists() and _hidden_beside(out) == []


_SWALLOWED_CTRL_C = """
import signal, sys
import nnscratch.run.experiment as experiment
from nnscratch.cli.main import main

write_outputs = experiment.write_outputs

class Collected:
    def __del__(self):  # Python ignores what a __del__ raises: the KeyboardInterrupt is swallowed
        signal.raise_signal(signal.SIGINT)

def writing_figures(*args, **kwargs):
    written = write_outputs(*args, **kwargs)
    Collected()  # collected at once: Ctrl-C "while the figures are drawn"
    print("still running after the Ctrl-C", flush=True)
    return written

experiment.write_outputs = writing_figures
sys.argv = ["nnscratch", *sys.argv[1:]]
sys.exit(main())
"""


def test_a_ctrl_c_python_swallows_while_the_figures_are_drawn_still_stops_the_run(mnist, tmp_path):
    """A Ctrl-C that lands in a ``__del__`` or a weakref callback (the garbage collector runs them
    while matplotlib draws) is ignored by Python, which prints "Exception ignored in ..." and goes
    on: the run used to finish with exit 0. The command line remembers it and raises it again
    before the run folder is put in place: exit 130, one line, the run kept as interrupted."""
    out = tmp_path / "run"
    proc = run_python(_SWALLOWED_CTRL_C, ["train", "--data-dir", mnist.source, "--train-subset", "200",
                                          "--epochs", "1", "--hidden", "8", "--out", str(out), "--quiet"], cwd=tmp_path)
    assert "still running after the Ctrl-C" in proc.stdout  # it was swallowed, as Python does
    assert proc.returncode == 130, proc.stderr
    line = assert_one_line_error(proc.stderr.replace("nnscratch: interrupted", "nnscratch: error: interrupted"))
    assert "interrupted" in line and "Exception ignored" not in proc.stderr
    assert folder_state(out) != "finished" and not (out / "report.md").exists()
