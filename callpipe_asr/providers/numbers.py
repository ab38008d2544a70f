"""Whole numbers in request text, shared by the dialects' parsers.

``str.isdigit()`` is true for Unicode digits such as ``²`` that ``int()`` refuses, and ``int()``
refuses strings of more than 4300 digits: a parser that checked ``isdigit()`` and then called
``int()`` answered such a query parameter with a 500 (found by ``tests/fuzz``).
"""

from __future__ import annotations

MAX_DIGITS = 18
"""More digits than any limit a request parameter has; longer strings are no number we accept."""


def ascii_whole(raw: str) -> int | None:
    """The value of ``raw`` when it is 1 to :data:`MAX_DIGITS` ASCII digits, else None."""
    if raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS:
        return int(raw)
    return None
