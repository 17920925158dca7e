"""Exceptions that the command line turns into one readable line.

Every error a user can cause (bad flag values, missing or corrupt data files, a model file that
is not ours) is an :class:`NNScratchError`. The CLI prints ``nnscratch: error: <message>`` and
exits with :attr:`NNScratchError.exit_code`: 2 for bad usage or input, 1 for failures.
:class:`Terminated` is not an error but SIGTERM, raised like Ctrl-C's ``KeyboardInterrupt``.
"""


class NNScratchError(Exception):
    """Base class: a message meant for the user, naming the problem and the fix."""

    exit_code = 1


class UsageError(NNScratchError):
    """A flag or argument has a value we cannot use."""

    exit_code = 2


class DataError(NNScratchError):
    """A dataset file is missing, unreadable or not what it claims to be."""

    exit_code = 2


class OutputError(NNScratchError):
    """An output could not be written (a full or failing disk); what was there before is kept."""


class Terminated(BaseException):
    """SIGTERM, turned into an exception by the command line (like Ctrl-C's KeyboardInterrupt), so
    that every write in flight cleans up and an interrupted run keeps its checkpoints."""


#: What the command line says, and its exit status, when Ctrl-C or SIGTERM stops it (128 + signal).
STOPPED = {KeyboardInterrupt: ("interrupted", 130), Terminated: ("terminated", 143)}
