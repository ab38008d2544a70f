"""Reading optional text and true/false flags from query parameters and form fields.

Shared by the dialects' parsers; each dialect keeps its own wording of the error.
"""

from __future__ import annotations

from typing import Mapping

from ..errors import InvalidRequest

BOOLEAN_WORDS = {"true": True, "1": True, "false": False, "0": False}
"""The spellings of a flag that every dialect's clients send."""


def optional_text(values: Mapping[str, str], name: str) -> str | None:
    """The stripped value of ``name``; None when it is absent or blank."""
    value = values.get(name)
    if value is None:
        return None
    return value.strip() or None


def boolean_flag(values: Mapping[str, str], name: str, error: str) -> bool:
    """``name`` as a flag (absent or blank is false); any other word is :class:`InvalidRequest`
    with ``error`` formatted with ``name`` and ``raw``."""
    raw = values.get(name)
    if raw is None or raw == "":
        return False
    value = BOOLEAN_WORDS.get(raw.strip().lower())
    if value is None:
        raise InvalidRequest(error.format(name=name, raw=raw))
    return value
