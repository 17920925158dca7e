"""The runs under a folder (``runs/`` by default), found by looking at their files.

A run is a folder directly inside RUNS_DIR holding a ``metrics.jsonl``, a ``metrics.json`` or an
``INTERRUPTED.md``; a run still training writes into its hidden staging folder
``.NAME.staging-XXXX`` beside its final place (:mod:`nnscratch.files.run_folder`), which is
listed too, under NAME. Its status, from its files:

* ``running``: a staging folder whose lock (``.NAME.nnscratch-lock``) names a live process;
* ``finished``: ``metrics.json`` is there (the run was put in place whole), or every engine's
  log ended with ``run_end`` ``finished``/``early_stop``;
* ``interrupted``: ``INTERRUPTED.md`` is there, or the log ended otherwise, or a staging folder
  whose process is gone (a killed run).

Nothing here follows a symbolic link out of RUNS_DIR: a run folder, or a file in it, whose real
path is not inside RUNS_DIR's real path is not listed (:func:`inside`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from nnscratch.files.run_folder import INTERRUPTED, LIVE_LOG, LOCK_SUFFIX, METRICS

_STAGING = re.compile(r"^\.(?P<name>.+)\.staging-[^/]+$")


@dataclass(frozen=True)
class RunFolderInfo:
    """A run found in RUNS_DIR: ``id`` is its folder's name (what URLs carry), ``name`` the run's."""

    id: str
    name: str
    path: Path
    staging: bool

    @property
    def log(self) -> Path:
        return self.path / LIVE_LOG


def inside(path: Path, root: Path) -> bool:
    """``path``'s real path (links followed) is ``root`` (a real path) or below it."""
    real = Path(os.path.realpath(path))
    return real == root or root in real.parents


def scan(runs_dir: Path) -> dict[str, RunFolderInfo]:
    """Every run in ``runs_dir`` by id (a missing or unreadable folder: none)."""
    root = Path(os.path.realpath(runs_dir))
    try:
        entries = list(os.scandir(root))
    except OSError:
        return {}
    runs = {}
    for entry in entries:
        match = _STAGING.match(entry.name)
        if entry.name.startswith(".") and not match:
            continue  # a lock, an aside folder of a commit, a hidden folder of the user's
        path = root / entry.name
        try:
            if not entry.is_dir() or not inside(path, root):
                continue
            names = set(os.listdir(path))
        except OSError:
            continue  # removed meanwhile, or unreadable
        if not names & {LIVE_LOG, METRICS, INTERRUPTED}:
            continue
        runs[entry.name] = RunFolderInfo(entry.name, match.group("name") if match else entry.name, path, bool(match))
    return runs


def folder_status(run: RunFolderInfo, ended: dict[str, str | None]) -> str:
    """``running``, ``finished`` or ``interrupted`` (see the module docstring); ``ended`` maps
    each engine in the log to its ``run_end`` reason (None: not ended)."""
    if run.staging:
        return "running" if _lock_alive(run) else "interrupted"
    if (run.path / INTERRUPTED).is_file():
        return "interrupted"
    if (run.path / METRICS).is_file():
        return "finished"
    if ended and all(reason in ("finished", "early_stop") for reason in ended.values()):
        return "finished"
    return "interrupted"


def _lock_alive(run: RunFolderInfo) -> bool:
    """The lock beside the run's final place names a process that is alive (read only: the
    lock is never taken here, which could refuse a run starting at that instant)."""
    lock = run.path.parent / f".{run.name}{LOCK_SUFFIX}"
    try:
        text = lock.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return False
    if not text.isdigit():
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, another user's
    return True


def figures(run: RunFolderInfo, root: Path) -> list[str]:
    """The run's figures (``*.png`` files in its folder, real paths inside ``root``), by name."""
    try:
        names = sorted(os.listdir(run.path))
    except OSError:
        return []
    return [n for n in names if n.endswith(".png") and not n.startswith(".")
            and (run.path / n).is_file() and inside(run.path / n, root)]
