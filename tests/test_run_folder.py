"""RunFolder: a run's folder is put in place whole or not at all, never replaces what is not a run
of ours, is written by one run at a time, and keeps an interrupted run's checkpoints where the user
finds them. No training here: the folders are filled by hand."""

from __future__ import annotations

import json
import os
import signal
import time
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nnscratch.errors import UsageError
from nnscratch.files.run_folder import INTERRUPTED, RunFolder, folder_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import cli_env, one_line  # noqa: E402


def _fill(folder: Path, tag: str, engines=("numpy", "torch")) -> None:
    """What a finished run of ``engines`` holds (in miniature), each file saying ``tag``."""
    (folder / "metrics.json").write_text(json.dumps({"config": {"tag": tag}, "engines": list(engines)}))
    (folder / "report.md").write_text(f"# report {tag}\n")
    for engine in engines:
        (folder / f"{engine}_model.safetensors").write_text(tag)


def _finished_run(out: Path, tag: str = "old", engines=("numpy", "torch")) -> dict[str, bytes]:
    with RunFolder(out, overwrite=out.exists()) as folder:
        _fill(folder.staging, tag, engines)
        folder.commit()
    return _snapshot(out)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _beside(out: Path) -> list[str]:
    """Everything beside ``out`` in its parent but ``out`` and the folders a test made itself."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- committing


def test_a_new_folder_is_put_in_place_whole_with_the_usual_mode(tmp_path):
    out = tmp_path / "runs" / "a"
    old = os.umask(0o022)
    try:
        with RunFolder(out) as folder:
            assert folder.staging.parent == out.parent and folder.staging.name.startswith(".a.staging-")
            assert folder.checkpoint_dir == folder.staging / "checkpoints" and folder.checkpoint_dir.is_dir()
            assert folder.lock_path.is_file() and not out.exists()
            _fill(folder.staging, "new")
            assert folder.commit() == out
    finally:
        os.umask(old)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "numpy_model.safetensors", "report.md",
                                                   "torch_model.safetensors"]  # no empty checkpoints/
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert folder_state(out) == "finished" and _beside(out) == []  # no staging, no lock left


def test_a_finished_run_is_refused_without_overwrite_and_kept(tmp_path):
    out = tmp_path / "a"
    before = _finished_run(out)
    with pytest.raises(UsageError) as exc:
        RunFolder(out)
    message = one_line(exc)
    assert "already holds a finished run" in message and "overwrite=True" in message
    cli = pytest.raises(UsageError, RunFolder, out, names={"out": "--out", "overwrite": "--overwrite"})
    assert "--out" in str(cli.value) and "pass --overwrite" in str(cli.value)
    assert _snapshot(out) == before and _beside(out) == []


def test_overwrite_replaces_the_whole_run_stale_engine_files_included(tmp_path):
    out = tmp_path / "a"
    _finished_run(out, "old", ("numpy", "torch"))
    with RunFolder(out, overwrite=True) as folder:
        _fill(folder.staging, "new", ("numpy",))
        assert (out / "torch_model.safetensors").read_text() == "old"  # the old run stays until the commit
        folder.commit()
    assert "torch_model.safetensors" not in _snapshot(out)  # the engine the new run did not train
    assert (out / "numpy_model.safetensors").read_text() == "new" and _beside(out) == []


def test_commit_needs_the_runs_metrics(tmp_path):
    with RunFolder(tmp_path / "a") as folder:
        with pytest.raises(RuntimeError, match="metrics.json"):
            folder.commit()
    assert not (tmp_path / "a").exists() and _beside(tmp_path / "a") == []


def test_a_symlinked_out_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "store" / "run-1"
    target.parent.mkdir()
    _finished_run(target, "old")
    link = tmp_path / "latest"
    link.symlink_to(target)
    with RunFolder(link, overwrite=True) as folder:
        _fill(folder.staging, "new")
        folder.commit()
    assert link.is_symlink() and (target / "report.md").read_text() == "# report new\n"


# --------------------------------------------------------------------------- refusing


def test_a_folder_of_other_files_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    (out / "metrics.json").write_text('{"accuracy": 0.9}')  # someone else's metrics: not ours
    for overwrite in (False, True):
        with pytest.raises(UsageError) as exc:
            RunFolder(out, overwrite=overwrite)
        assert "not an nnscratch run" in one_line(exc)
    assert (out / "chapter1.tex").read_text() == "precious"


@pytest.mark.parametrize("where", ["/", "/usr", "/etc", "/tmp", "/dev", "/proc/self", "/sys/kernel/x", "/usr/bin/run",
                                   "/etc/nnscratch", "HOME"])
def test_system_folders_are_refused(where):
    out = Path.home() if where == "HOME" else Path(where)
    with pytest.raises(UsageError) as exc:
        RunFolder(out, overwrite=True)
    assert "system folder" in one_line(exc)


def test_the_current_folder_and_its_parents_are_refused(tmp_path, monkeypatch):
    here = tmp_path / "work" / "project"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for out in (".", "..", str(here)):
        with pytest.raises(UsageError) as exc:
            RunFolder(out)
        assert "current folder" in one_line(exc)


def test_out_inside_or_holding_a_dataset_is_refused(tmp_path):
    data = tmp_path / "images"
    (data / "cat").mkdir(parents=True)
    for out, word in ((data / "run", "inside"), (data / "cat" / "run", "inside"), (tmp_path, "holding")):
        with pytest.raises(UsageError) as exc:
            RunFolder(out, protected=[data])
        assert f"is {word} {data}" in one_line(exc)
    RunFolder(tmp_path / "elsewhere", protected=[data])  # beside it is fine


def test_a_file_or_a_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        RunFolder(tmp_path / "f")
    with pytest.raises(UsageError, match="cannot be written"):
        RunFolder(tmp_path / "f" / "run")


@pytest.mark.parametrize("out", [42, None, b"bytes", ""])
def test_out_that_is_no_path_is_refused(out):
    with pytest.raises(UsageError) as exc:
        RunFolder(out)
    assert one_line(exc).startswith("out must")


# --------------------------------------------------------------------------- failing


def test_abort_removes_staging_and_the_parents_it_made_and_keeps_the_old_run(tmp_path):
    out = tmp_path / "a"
    before = _finished_run(out)
    with RunFolder(out, overwrite=True) as folder:
        _fill(folder.staging, "new")
        folder.abort()
    assert _snapshot(out) == before and _beside(out) == []
    with RunFolder(tmp_path / "new" / "deep" / "b") as folder:
        _fill(folder.staging, "new")
        folder.abort()
    assert not (tmp_path / "new").exists()


def test_an_exception_inside_the_block_leaves_nothing(tmp_path):
    out = tmp_path / "a"
    before = _finished_run(out)
    with pytest.raises(ZeroDivisionError):
        with RunFolder(out, overwrite=True) as folder:
            _fill(folder.staging, "new")
            1 / 0
    assert _snapshot(out) == before and _beside(out) == []


def test_a_killed_runs_leftovers_are_cleaned_and_a_run_caught_aside_is_put_back(tmp_path):
    out = tmp_path / "a"
    before = _finished_run(out)
    os.rename(out, tmp_path / ".a.old-123-abcd")  # killed between the two renames of a commit
    (tmp_path / ".a.staging-xyz").mkdir()        # and its staging folder
    with RunFolder(tmp_path / "b"):  # another out's leftovers are not touched
        pass
    assert (tmp_path / ".a.staging-xyz").exists()
    with RunFolder(out, overwrite=True) as folder:
        assert _snapshot(out) == before  # put back before anything else
        folder.abort()
    assert _snapshot(out) == before and _beside(out) == []


# --------------------------------------------------------------------------- the lock

_HOLDER = """
import sys, time
from nnscratch.files.run_folder import RunFolder
with RunFolder(sys.argv[1]) as folder:
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_lock(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], env=cli_env(), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_lives(tmp_path):
    out = tmp_path / "a"
    holder = _hold_lock(out)
    try:
        with pytest.raises(UsageError) as exc:
            with RunFolder(out):
                pass
        assert f"being written by another nnscratch run (pid {holder.pid})" in one_line(exc)
        with RunFolder(tmp_path / "b"):  # another folder is free
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert (tmp_path / ".a.nnscratch-lock").exists()  # a killed holder leaves its lock file...
    with RunFolder(out) as folder:  # ...which is taken over
        assert folder.lock_path.read_text().strip() == str(os.getpid())
        _fill(folder.staging, "new")
        folder.commit()
    assert folder_state(out) == "finished" and _beside(out) == []


# --------------------------------------------------------------------------- interrupted


def _hint(checkpoints: Path) -> str:
    return f"nnscratch compare --resume {checkpoints}"


def _interrupt(out: Path, **kwargs) -> RunFolder:
    with RunFolder(out, **kwargs) as folder:
        (folder.checkpoint_dir / "epoch-3.safetensors").write_text("weights")
        _fill(folder.staging, "partial")  # outputs written so far are dropped
        folder.interrupt(_hint)
    return folder


def test_an_interrupted_run_keeps_its_checkpoints_and_says_how_to_resume(tmp_path):
    out = tmp_path / "a"
    folder = _interrupt(out)
    assert folder.final == out and folder.interrupted and not folder.kept_beside
    assert sorted(p.name for p in out.iterdir()) == [INTERRUPTED, "checkpoints"]
    assert (out / "checkpoints" / "epoch-3.safetensors").read_text() == "weights"
    note = (out / INTERRUPTED).read_text()
    assert f"nnscratch compare --resume {out / 'checkpoints'}" in note
    assert folder_state(out) == "interrupted" and _beside(out) == []
    with RunFolder(out) as resumed:  # resumed into without overwrite, and replaced by the finished run
        _fill(resumed.staging, "resumed")
        resumed.commit()
    assert folder_state(out) == "finished" and not (out / INTERRUPTED).exists()


def test_an_interrupted_run_never_replaces_a_finished_one(tmp_path):
    out = tmp_path / "a"
    before = _finished_run(out)
    folder = _interrupt(out, overwrite=True)
    assert _snapshot(out) == before
    assert folder.kept_beside and folder.final == tmp_path / "a.interrupted"
    assert folder_state(folder.final) == "interrupted"
    assert str(folder.final / "checkpoints") in (folder.final / INTERRUPTED).read_text()
    again = _interrupt(out, overwrite=True)  # a second interrupted run replaces the first one beside
    assert again.final == tmp_path / "a.interrupted" and _beside(out) == []


def test_an_interrupt_before_any_checkpoint_keeps_nothing(tmp_path):
    out = tmp_path / "a"
    before = _finished_run(out)
    with RunFolder(out, overwrite=True) as folder:
        _fill(folder.staging, "partial")
        assert folder.interrupt(_hint) is None
    assert _snapshot(out) == before and _beside(out) == [] and not (tmp_path / "a.interrupted").exists()


def test_ctrl_c_waits_until_a_folder_step_is_done(tmp_path):
    from nnscratch.files.run_folder import signals_deferred

    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs in the main thread at its next check (late under load)
            done.append("the step went on")
    assert done == ["the step went on"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
