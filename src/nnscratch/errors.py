"""Exceptions that the command line turns into one readable line.

Every error a user can cause (bad flag values, missing or corrupt data files, a model file that
is not ours) is an :class:`NNScratchError`. The CLI prints ``nnscratch: error: <message>`` and
exits with :attr:`NNScratchError.exit_code`: 2 for bad usage or input, 1 for failures.
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
