"""A run's output folder, put in place whole or not at all.

Everything a run writes goes into a *staging* folder beside ``out`` (``.NAME.staging-XXXX``, on the
same file system); only when the whole set is written does :meth:`RunFolder.commit` move it into
place, in one step for the reader: a previous run at ``out`` is renamed aside, the staging folder
renamed to ``out``, and the old run removed. So ``out`` holds one run, never files of two runs, and
never an engine's stale files that the new run did not train. A run that fails leaves ``out`` as it
was (:meth:`RunFolder.abort`); one that is interrupted keeps its checkpoints in a folder marked
``INTERRUPTED.md`` (:meth:`RunFolder.interrupt`).

What ``out`` may be, checked before any work (:class:`~nnscratch.errors.UsageError`, one line):

* missing or empty: the run creates it;
* a finished run of ours (recognised by its ``metrics.json``: a JSON object with our ``config``
  and ``engines``): replaced whole, with ``overwrite`` only;
* an interrupted run of ours (recognised by its :data:`INTERRUPTED` note): the new run (a resumed
  one, typically) replaces it without ``overwrite``;
* anything else is refused: a folder of other files (we never delete what we did not write), a
  file, a system folder (``/``, ``/usr``, ``/etc``, the home folder itself...), the current folder
  or one holding it, and a folder inside (or holding) one of ``protected``: the dataset being read.

A lock beside ``out`` (:data:`LOCK_SUFFIX`, holding its holder's pid) keeps two runs from writing
one folder at once: the second is refused while the first lives. The lock is an advisory
``flock`` on that file, which the kernel releases when its holder dies, so a lock file left by a
killed run is simply taken over (where ``fcntl`` is missing, the pid is checked instead).

Ctrl-C and SIGTERM wait while a RunFolder takes its lock, commits, interrupts or aborts
(:func:`signals_deferred`), then act as usual: none of these steps is ever cut in half.

A run killed outright (``kill -9``, a power cut) can leave its hidden staging folder beside
``out``; the next run into the same ``out`` removes it (and puts back a previous run that the
crash caught renamed aside, in the instant between the two renames of a commit).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from nnscratch.errors import UsageError, raise_pending_stop
from nnscratch.files.atomic import _current_umask, _fsync_dir, atomic_write_text
from nnscratch.files.json_text import parse_json

#: What makes a folder a finished run of ours: this file, a JSON object holding :data:`METRICS_KEYS`.
METRICS = "metrics.json"
METRICS_KEYS = ("config", "engines")
#: The note of an interrupted run, what makes a folder one: what happened and how to resume it.
INTERRUPTED = "INTERRUPTED.md"
INTERRUPTED_TITLE = "# Interrupted nnscratch run"
#: The lock of ``out`` is the file ``.NAME`` + this, beside ``out``.
LOCK_SUFFIX = ".nnscratch-lock"
_STAGING = ".staging-"
#: The run's event log (``metrics.jsonl``), kept with the checkpoints of an interrupted run.
LIVE_LOG = "metrics.jsonl"
_OLD = ".old-"

#: Folders that are never a run folder themselves (``/`` and any drive root are refused too).
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media",
                  "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
                  "/var/tmp", "/Applications", "/Library", "/System", "/Users", "/Volumes", "/private",
                  "/private/etc", "/private/tmp", "/private/var")
#: Folders that no run folder may be inside of: the system's own files and its pseudo file systems.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
                "/usr", "/System", "/private/etc")

#: How a RunFolder names its two settings in messages; the command line passes its flags instead.
PARAMETER_NAMES = {"out": "out", "overwrite": "overwrite=True"}


def folder_state(path: Path) -> str:
    """What is at ``path``: ``"missing"``, ``"empty"``, ``"finished"`` or ``"interrupted"`` (a run
    of ours), ``"file"`` (not a folder) or ``"foreign"`` (a folder of files that are not a run)."""
    if not os.path.lexists(path):
        return "missing"
    if not path.is_dir():
        return "file"
    try:
        names = set(os.listdir(path))
    except OSError:
        return "foreign"
    if not names:
        return "empty"
    try:
        if INTERRUPTED in names and (path / INTERRUPTED).read_text(encoding="utf-8").startswith(INTERRUPTED_TITLE):
            return "interrupted"
        if METRICS in names:
            metrics = parse_json((path / METRICS).read_text(encoding="utf-8"))
            if isinstance(metrics, dict) and all(key in metrics for key in METRICS_KEYS):
                return "finished"
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: not something we wrote
        pass
    return "foreign"


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, then act as they would have (the handler
    in place before is called, or the signal sent again): a rename pair, a lock taken or a folder
    removed is never cut in half. Only the main thread handles signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda number, frame: caught.append(number))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)  # KeyboardInterrupt, the command line's Terminated...
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


def _uninterrupted(method):
    """``method`` runs in :func:`signals_deferred`."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with signals_deferred():
            return method(*args, **kwargs)
    return wrapper


class RunFolder:
    """The output folder ``out`` of one run, written in a staging folder and put in place whole.

    ::

        with RunFolder(out, overwrite=False, protected=[dataset_folder]) as folder:
            ...write everything into folder.staging (checkpoints into folder.checkpoint_dir)...
            folder.commit()        # or folder.interrupt(hint) / folder.abort()

    The constructor checks ``out`` at once (see the module docstring); entering takes the lock
    and makes the staging folder; leaving releases the lock, and removes the staging folder
    (:meth:`abort`) unless :meth:`commit` or :meth:`interrupt` was called.

    Parameters
    ----------
    out : path
        The run folder. A symbolic link is followed: the folder it points to is the one replaced.
    overwrite : bool
        Replace a finished run at ``out``.
    protected : paths
        Folders (or files) the run reads, such as a ``folder:`` dataset: ``out`` may be neither
        inside one nor hold one.
    names : mapping
        How messages name ``out`` and ``overwrite`` (default: :data:`PARAMETER_NAMES`).
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, protected: Sequence[str | os.PathLike] = (),
                 names: Mapping[str, str] | None = None) -> None:
        self.names = {**PARAMETER_NAMES, **(names or {})}
        if isinstance(out, bool) or not isinstance(out, (str, os.PathLike)):
            raise UsageError(f"{self.names['out']} must be a folder path (str or pathlib.Path), got {out!r}")
        if not isinstance(overwrite, bool):
            raise UsageError(f"overwrite must be True or False, got {overwrite!r}")
        if not str(os.fspath(out)).strip():
            raise UsageError(f"{self.names['out']} must name a folder, got {str(out)!r}")
        self.out = Path(out)
        self.overwrite = overwrite
        self.protected = tuple(Path(p) for p in protected)
        self.real = Path(os.path.realpath(self.out))  # the folder replaced (a link to it is followed)
        self.staging: Path | None = None
        self.checkpoint_dir: Path | None = None
        self.final: Path | None = None          # where the run's folder ended up (commit or interrupt)
        self.interrupted = False                # interrupt() kept the run's checkpoints (in final)
        self.kept_beside = False                # ...beside a finished run at out
        self._lock_fd: int | None = None
        self._made: list[Path] = []              # parent folders this run created (removed again on abort)
        self._ended = False
        self._check()

    # ------------------------------------------------------------------ checks

    def _check(self) -> None:
        """Refuse now what the run could not or must not write (one line each, naming the fix)."""
        self._check_place()
        state = folder_state(self.real)
        out, overwrite = self.names["out"], self.names["overwrite"]
        if state == "file":
            raise UsageError(f"{out} {self.out} is a file, not a folder; choose a folder for the run's outputs")
        if state == "foreign":
            raise UsageError(f"{out} {self.out} already holds files that are not an nnscratch run; "
                             "choose a new or empty folder (nnscratch never replaces files it did not write)")
        if state == "finished" and not self.overwrite:
            raise UsageError(f"{out} {self.out} already holds a finished run; pass {overwrite} to replace it "
                             "or choose another folder")
        self._check_writable()

    def _check_place(self) -> None:
        out, real = self.names["out"], self.real
        if real == Path(real.anchor) or str(real) in SYSTEM_FOLDERS or real == _real(Path.home()):
            raise UsageError(f"{out} {self.out} is a system folder; choose a folder of its own, such as runs/NAME")
        tree = next((t for t in SYSTEM_TREES if _inside(real, Path(t))), None)
        if tree:
            raise UsageError(f"{out} {self.out} is inside the system folder {tree}; choose a folder of your own, "
                             "such as runs/NAME")
        here = _real(Path.cwd())
        if _inside(here, real):
            raise UsageError(f"{out} {self.out} is the current folder or holds it; choose a sub-folder "
                             "such as runs/NAME")
        for item in self.protected:
            data = _real(item)
            if _inside(real, data) or _inside(data, real):
                where = "inside" if _inside(real, data) else "holding"
                raise UsageError(f"{out} {self.out} is {where} {item}, which the run reads; "
                                 "choose a folder outside the data")

    def _check_writable(self) -> None:
        """Prove that the folder that will hold ``out`` (or its nearest existing parent) takes a
        new folder: a probe folder made and removed at once."""
        existing = self.real.parent
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        try:
            if not existing.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
            os.rmdir(_make_temp_dir(existing, ".nnscratch-probe-"))
        except OSError as exc:
            raise UsageError(f"{self.names['out']} {self.out} cannot be written ({exc.strerror or exc}); "
                             "choose a folder you can write to") from None

    # ------------------------------------------------------------------ the context

    def __enter__(self) -> RunFolder:
        if self._lock_fd is not None or self._ended:
            raise RuntimeError("a RunFolder is entered once")
        try:
            self._open()  # a Ctrl-C that came meanwhile is raised as it ends: here
        except BaseException:
            self.abort()
            raise
        return self

    @_uninterrupted
    def _open(self) -> None:
        self._make_parents(self.real.parent)
        self._lock()
        self._recover()
        self._check()  # again, under the lock: another run may have finished into out meanwhile
        self.staging = Path(_make_temp_dir(self.real.parent, f".{self.real.name}{_STAGING}"))
        os.chmod(self.staging, 0o777 & ~_current_umask())  # mkdtemp makes 0700; a folder's usual mode
        self.checkpoint_dir = self.staging / "checkpoints"
        self.checkpoint_dir.mkdir()

    @_uninterrupted
    def __exit__(self, *exc_info) -> None:
        if not self._ended:
            self.abort()
        self._unlock()

    @property
    def locked(self) -> bool:
        """True between entering and leaving."""
        return self._lock_fd is not None

    def _require_open(self) -> None:
        if self.staging is None or self._ended:
            raise RuntimeError("RunFolder: commit(), interrupt() and abort() need an entered folder, once")

    # ------------------------------------------------------------------ the three endings

    @_uninterrupted
    def commit(self) -> Path:
        """Put the staging folder in place as ``out`` (a previous run there is replaced in one
        step: renamed aside, staging renamed to ``out``, the old one removed). Returns ``out``.
        A Ctrl-C that Python swallowed while the outputs were written is raised here, before
        anything is put in place (:func:`~nnscratch.errors.raise_pending_stop`)."""
        raise_pending_stop()
        self._require_open()
        if not (self.staging / METRICS).is_file():
            raise RuntimeError(f"RunFolder.commit(): a finished run holds its {METRICS}; write it first")
        if any(self.checkpoint_dir.iterdir()):
            _fsync_dir(self.checkpoint_dir)
        else:
            self.checkpoint_dir.rmdir()  # a run without checkpoints has no checkpoints/ folder
        _fsync_dir(self.staging)
        self._move_into(self.real, self.out)
        return self.out

    @_uninterrupted
    def interrupt(self, resume_hint: Callable[[Path], str]) -> Path | None:
        """The run was interrupted: keep its checkpoints, say so in :data:`INTERRUPTED.md <INTERRUPTED>`
        with the command that resumes it (``resume_hint(checkpoint folder)``), and put the folder
        where the user finds it. Every other output written so far is dropped (no half set of
        files, no report of an unfinished run).

        The folder goes to ``out`` when ``out`` held nothing or an interrupted run; when ``out``
        holds a finished run, that run is kept whole and the interrupted one goes beside it
        (``out.interrupted``; :attr:`kept_beside` is then True). Returns the folder, or None when
        no checkpoint was written yet: then there is nothing to resume, and nothing is kept
        (as :meth:`abort`). After :meth:`commit` (an interrupt that came as the run was put in
        place), it changes nothing and returns ``out``.
        """
        if self._ended:
            return self.final
        self._require_open()
        if not any(self.checkpoint_dir.iterdir()):
            self.abort()
            return None
        for child in self.staging.iterdir():
            if child.name not in (self.checkpoint_dir.name, LIVE_LOG):  # the checkpoints and the event log stay
                _remove(child)
        dest = self._interrupted_place()
        shown = self._shown(dest)
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        atomic_write_text(self.staging / INTERRUPTED,
                          f"{INTERRUPTED_TITLE}\n\nThis run was interrupted on {when}, before it finished: this "
                          "folder holds its checkpoints (`checkpoints/`) and its event log (`metrics.jsonl`), not "
                          "its results.\n\n"
                          f"Resume it with:\n\n    {resume_hint(shown / self.checkpoint_dir.name)}\n")
        _fsync_dir(self.staging)
        self.kept_beside = dest != self.real
        self._move_into(dest, shown)
        self.interrupted = True
        return shown

    @_uninterrupted
    def abort(self) -> None:
        """The run failed: remove the staging folder (nothing of it is left); ``out`` stays as it was."""
        if self._ended:
            return
        if self.staging is not None:
            _remove(self.staging)
        self._end_without_output()

    # ------------------------------------------------------------------ helpers

    def _end_without_output(self) -> None:
        """Nothing of this run is left: the parent folders it made (if still empty) go, the lock too."""
        self._ended = True
        self._unlock()
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _interrupted_place(self) -> Path:
        """``out``, unless it holds a finished run (or something else that is not ours to
        replace): then the first free ``out.interrupted``, ``out.interrupted-2``, ..."""
        if folder_state(self.real) in ("missing", "empty", "interrupted"):
            return self.real
        for n in range(1, 1000):
            place = self.real.with_name(f"{self.real.name}.interrupted" + (f"-{n}" if n > 1 else ""))
            if folder_state(place) in ("missing", "empty", "interrupted"):
                return place
        raise OSError(errno.EEXIST, "no free name for the interrupted run", str(self.real))

    def _shown(self, place: Path) -> Path:
        """``place`` as the user named ``out`` (relative stays relative; a followed link shows the target)."""
        if self.out.is_symlink() or _real(self.out.parent) != self.real.parent:
            return place
        return self.out.parent / place.name

    def _move_into(self, dest: Path, shown: Path) -> None:
        """Rename the staging folder to ``dest`` (the run has then ended, at ``shown``); whatever
        was there is renamed aside first and removed after (or put back if the second rename fails)."""
        aside = None
        if os.path.lexists(dest):
            aside = dest.with_name(f".{dest.name}{_OLD}{os.getpid()}-{secrets.token_hex(4)}")
            os.rename(dest, aside)
        try:
            os.rename(self.staging, dest)
        except BaseException:
            if aside is not None:
                os.rename(aside, dest)
            raise
        self._ended, self.final = True, shown
        _fsync_dir(dest.parent)
        if aside is not None:
            _remove(aside)

    def _make_parents(self, folder: Path) -> None:
        missing = []
        while not folder.exists() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                self._end_without_output()
                raise UsageError(f"{self.names['out']} {self.out} cannot be created ({exc.strerror or exc}); "
                                 "choose a folder you can write to") from None
            self._made.append(path)

    def _recover(self) -> None:
        """Under the lock: what a killed run into ``out`` left beside it. A previous run caught
        renamed aside (``out`` missing) is put back; leftover staging and aside folders go."""
        prefix = f".{self.real.name}"
        leftovers = sorted((p for p in self.real.parent.iterdir()
                            if p.name.startswith(prefix + _STAGING) or p.name.startswith(prefix + _OLD)),
                           key=lambda p: p.stat().st_mtime)
        aside = [p for p in leftovers if p.name.startswith(prefix + _OLD)]
        if aside and not os.path.lexists(self.real):
            os.rename(aside[-1], self.real)
            leftovers.remove(aside[-1])
        for path in leftovers:
            _remove(path)

    @property
    def lock_path(self) -> Path:
        """The lock file of ``out``: ``.NAME.nnscratch-lock`` beside it."""
        return self.real.with_name(f".{self.real.name}{LOCK_SUFFIX}")

    def _lock(self) -> None:
        """Take the lock of ``out`` or refuse (the holder's pid in the message)."""
        path = self.lock_path
        for _ in range(10):  # a holder that releases while we open its file: open the new one
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd, path):
                holder = _read_pid(fd)
                os.close(fd)
                raise UsageError(f"{self.names['out']} {self.out} is being written by another nnscratch run "
                                 f"(pid {holder if holder else 'unknown'}); wait for it to finish or choose "
                                 "another folder")
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._lock_fd = fd
                return
            os.close(fd)
        raise OSError(errno.EAGAIN, "the lock file keeps changing", str(path))

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)  # before closing: a waiting run then opens a new file
        os.close(self._lock_fd)
        self._lock_fd = None


def _try_lock(fd: int, path: Path) -> bool:
    """An exclusive, non-blocking lock on the open file ``fd``; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the pid written in the file decides
        holder = _read_pid(fd)
        return not holder or holder == os.getpid() or not _alive(holder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except (OSError, AttributeError):
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, but is not ours to signal
    return True


def _make_temp_dir(parent: Path, prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(dir=parent, prefix=prefix)


def _remove(path: Path) -> None:
    """Remove a file or a folder tree, whatever of it can be removed (a failing disk must not
    turn the run's own error into another)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or below it (both real paths)."""
    return path == folder or folder in path.parents

