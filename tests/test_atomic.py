"""Every output kind (JSON, Markdown, PNG, safetensors) is written whole, durable and readable:
the usual permissions (0666 & ~umask), fsync of the file and of its folder before/after the
rename, and a failure or Ctrl-C in the middle of writing keeps the previous file and leaves no
temporary file behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from nnscratch.files import atomic
from nnscratch.files.atomic import atomic_path, write_json
from nnscratch.files.model_files import load_model, save_model
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import mlp_spec

SPEC = mlp_spec(input_dim=6, hidden=(4,), num_classes=3)


def _write_json(path: Path, version: int) -> None:
    write_json(path, {"version": version})


def _write_markdown(path: Path, version: int) -> None:
    from nnscratch.report import write_report

    metrics = {"config": {"epochs": version}, "dataset": {"name": "mnist"}, "engines": {}}
    write_report(path, metrics, [])


def _write_png(path: Path, version: int) -> None:
    import matplotlib.pyplot as plt

    from nnscratch.report.plots import save_figure

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, version])
    save_figure(fig, path)


def _write_model(path: Path, version: int) -> None:
    save_model(path, initial_state(SPEC, np.random.default_rng(version)), SPEC, engine="numpy", version=version)


WRITERS = {"report.json": _write_json, "report.md": _write_markdown, "figure.png": _write_png,
           "model.safetensors": _write_model}


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("name", list(WRITERS))
def test_outputs_get_the_usual_permissions(tmp_path, umask_022, name):
    path = tmp_path / name
    WRITERS[name](path, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    old = os.umask(0o002)
    try:
        WRITERS[name](path, 2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch, name, failure):
    path = tmp_path / name
    WRITERS[name](path, 1)
    before = path.read_bytes()

    def fail_after_writing(*args, **kwargs):  # the writer has put (part of) a new file in place, then fails
        for tmp in tmp_path.glob(".*.tmp"):
            tmp.write_bytes(b"half a file")
        raise failure

    monkeypatch.setattr(atomic, "_fsync_file", fail_after_writing)
    with pytest.raises(type(failure)):
        WRITERS[name](path, 2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("name", list(WRITERS))
def test_file_and_folder_are_flushed_to_disk(tmp_path, monkeypatch, name):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else str(fd))
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", recording_fsync)
    path = tmp_path / name
    WRITERS[name](path, 1)
    if not os.path.exists("/proc/self/fd"):
        assert len(synced) >= 2
        return
    assert any(p.endswith(".tmp") and Path(p).parent == tmp_path for p in synced), synced  # the file, before the rename
    assert str(tmp_path) in synced, synced  # the folder, after it


def test_model_written_after_an_interrupted_write_is_readable(tmp_path, monkeypatch):
    """The path never holds a partial safetensors file: a reader sees the old model or the new one."""
    path = tmp_path / "model.safetensors"
    _write_model(path, 1)
    monkeypatch.setattr(atomic, "_fsync_file", lambda p: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _write_model(path, 2)
    state, spec, info = load_model(path)
    assert info["version"] == 1 and spec == SPEC


def test_atomic_path_removes_its_temp_file_when_the_writer_fails(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise ValueError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_json_outputs_are_strict_json_even_for_a_diverged_run(tmp_path):
    """NaN and infinities (a diverged run's losses) are written as null: strict readers accept the file."""
    import json

    path = write_json(tmp_path / "m.json", {"loss": [1.0, float("nan"), float("inf")], "x": {"y": -float("inf")},
                                            "ok": 2.5, "n": 3})
    strict = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert strict == {"loss": [1.0, None, None], "x": {"y": None}, "ok": 2.5, "n": 3}
