"""Exceptions that the command line turns into one readable line.

Every error a user can cause (bad flag values, missing or corrupt data files, a model file that
is not ours) is an :class:`NNScratchError`. The CLI prints ``nnscratch: error: <message>`` and
exits with :attr:`NNScratchError.exit_code`: 2 for bad usage or input, 1 for failures.
:class:`Terminated` is not an error but SIGTERM, raised like Ctrl-C's ``KeyboardInterrupt``.
"""

import signal

#: How to install what an optional feature needs: the one place each install line is spelt.
INSTALL_TORCH = "pip install torch==2.13.0 then pip install 'nnscratch[torch]'"
INSTALL_NUMBA = "pip install numba"
INSTALL_ONNX = "pip install 'nnscratch[onnx]'"
INSTALL_TENSORBOARD = "pip install 'nnscratch[tensorboard]'"
INSTALL_CUPY = "pip install 'nnscratch[gpu]' (CuPy for CUDA 12: cupy-cuda12x)"


class NNScratchError(Exception):
    """Base class: a message meant for the user, naming the problem and the fix."""

    exit_code = 1


class UsageError(NNScratchError):
    """A flag or argument has a value we cannot use."""

    exit_code = 2


class ParameterError(UsageError):
    """A bad value for a parameter of a library class or function, named as the code names it.

    ``parameter`` is that name (``"betas"``, ``"T_max"``), ``problem`` the rest of the line
    (``"must both be in [0, 1), got (0.9, 1.0)"``), and the message is the two together:
    ``betas must both be in [0, 1), got (0.9, 1.0)``. Called from Python, that is the name one
    passed. The settings layer (:mod:`nnscratch.run.config`), which knows the flag that sets each
    parameter, says the flag instead: ``--betas must both be in [0, 1), got (0.9, 1.0)``.
    """

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter} {problem}")
        self.parameter, self.problem = parameter, problem


class DataError(NNScratchError):
    """A dataset file is missing, unreadable or not what it claims to be."""

    exit_code = 2


class OutputError(NNScratchError):
    """An output could not be written (a full or failing disk); what was there before is kept."""


class Terminated(BaseException):
    """SIGTERM, turned into an exception by the command line (like Ctrl-C's KeyboardInterrupt), so
    that every write in flight cleans up and an interrupted run keeps its checkpoints."""


class RunInterrupted(BaseException):
    """Training stopped on Ctrl-C or SIGTERM (``signum``) after the step in flight: a checkpoint
    of ``engine`` was written to ``checkpoint`` (None when checkpoints are off) and the run can be
    resumed from it: ``command`` says how, once the run's folder is in place. The command line
    prints it and exits 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, signum: int, engine: str, checkpoint: str | None = None) -> None:
        super().__init__(f"{engine} training interrupted by signal {signum}")
        self.signum, self.engine, self.checkpoint = signum, engine, checkpoint
        self.command: str | None = None


#: What the command line says, and its exit status, when Ctrl-C or SIGTERM stops it (128 + signal).
STOPPED = {KeyboardInterrupt: ("interrupted", 130), Terminated: ("terminated", 143)}

#: Stop signals the command line's handler has seen and no one has yet acted on (see :func:`on_stop_signal`).
_pending_stops: list[int] = []


def on_stop_signal(signum: int, frame) -> None:
    """The command line's handler for SIGINT and SIGTERM: remember the signal, then raise
    ``KeyboardInterrupt`` (SIGINT) or :class:`Terminated` in the main thread, as Python would.

    Python *ignores* an exception raised while a weakref callback or a ``__del__`` runs (it prints
    "Exception ignored in ..." and goes on), and the garbage collector runs those at any moment: a
    Ctrl-C that lands in one would be lost and the run would finish as if never stopped.
    Remembered, it is raised again by :func:`raise_pending_stop` at the next safe point (before a
    run folder is put in place, and before the command returns)."""
    _pending_stops.append(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()


def raise_pending_stop() -> None:
    """Raise the stop :func:`on_stop_signal` saw and Python swallowed, if any (else nothing)."""
    if _pending_stops:
        signum = _pending_stops[0]
        _pending_stops.clear()
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()


def clear_pending_stops() -> None:
    """Forget the stops seen so far: the command line has acted on them (it reported the stop)."""
    _pending_stops.clear()
