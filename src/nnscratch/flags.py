"""The command-line flag of a setting, for error messages: one rule for the spelling.

A setting ``weight_decay`` is the flag ``--weight-decay`` and the config-file key ``weight_decay``.
Where a module's parameter has torch's name and the flag another (a schedule's ``gamma`` is
``--lr-gamma``), the module passes its table of such renames.
"""

from __future__ import annotations

from typing import Mapping


def flag(name: str, renames: Mapping[str, str] | None = None) -> str:
    """The flag of parameter ``name``: ``renames[name]`` if listed, else ``--`` + ``name`` with ``-`` for ``_``.

    >>> flag("weight_decay"), flag("gamma", {"gamma": "--lr-gamma"})
    ('--weight-decay', '--lr-gamma')
    """
    if renames and name in renames:
        return renames[name]
    return "--" + name.replace("_", "-")
