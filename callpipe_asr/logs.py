"""Logs to stdout, one line per event, as JSON objects or as text, with the request and job ids.

Ids travel in a context variable rather than in every call: the web middleware binds the request
id, the key ring the key's *name*, a worker the job id; each log line made in that context (in
threads started from it too, where the caller copies the context) carries them. Transcripts are
logged only at DEBUG: a voicemail's words are personal data, and INFO logs go to journald.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from types import MappingProxyType
from typing import Any, Iterator, Mapping, TextIO

FORMATS = ("text", "json")
_EMPTY: Mapping[str, str] = MappingProxyType({})
_FIELDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("callpipe_asr_log_fields", default=_EMPTY)
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
"""What every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field."""


def fields() -> Mapping[str, str]:
    """The ids bound in the current context (``request_id``, ``job_id``, ``key``...)."""
    return _FIELDS.get()


def bind(**values: str) -> contextvars.Token[Mapping[str, str]]:
    """Add ids to the current context until it ends (or the token is reset)."""
    return _FIELDS.set(MappingProxyType({**_FIELDS.get(), **values}))


@contextlib.contextmanager
def bound(**values: str) -> Iterator[None]:
    """Add ids for the duration of a block; whatever is bound inside it goes with it."""
    token = bind(**values)
    try:
        yield
    finally:
        _FIELDS.reset(token)


class _ContextFields(logging.Filter):
    """Puts the bound ids on each record as it is made (in the thread that makes it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context_fields = dict(_FIELDS.get())
        return True


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES and k != "context_fields"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the bound ids, and
    the ``extra=`` fields of the call."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "context_fields", {}),
            **_extra(record),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value...``: for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = {**getattr(record, "context_fields", {}), **_extra(record)}
        if not pairs:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return head + " " + " ".join(f"{k}={_text_value(v)}" for k, v in pairs.items()) + sep + tail


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c in '"=' for c in text)) else text


def _iso_time(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log line of the process to ``stream`` (stdout) in ``fmt``; replaces handlers
    set before, so calling it again (tests) does not double lines."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFields())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # our middleware logs each request


__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "bind", "bound", "configure", "fields"]
