"""JSON read from a file someone else may have written: :func:`parse_json`.

Python's parser recurses once per level of nesting, so a hostile document (``[[[[...`` a hundred
thousand times, a few hundred kilobytes) raises ``RecursionError``, which no ``except ValueError``
around a parse catches: it would end the command in a traceback. :func:`parse_json` turns it into
the ``ValueError`` a malformed document raises, so each reader's one-line error says it.
:data:`TOO_DEEP` is that reason, said the same way for a TOML config (``tomllib`` recurses too).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_json", "TOO_DEEP"]

#: Why a document nested too deeply is refused: the one wording, for JSON and TOML.
TOO_DEEP = "it is nested deeper than Python's parser can follow"


def parse_json(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)``; a document nested too deeply is a ``ValueError`` too."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
