"""The command line: parses and checks flags, calls the library (:mod:`nnscratch.api`,
:mod:`nnscratch.run`), and turns every :class:`~nnscratch.errors.NNScratchError` into one line.

Nothing below this package imports it (``tests/test_imports.py`` checks).
"""

from nnscratch.cli.main import main

__all__ = ["main"]
