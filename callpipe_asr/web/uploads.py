"""Reading request bodies with every limit enforced while streaming, not after.

Size (``server.max_upload_bytes``, 413), form parts (400), how many bodies arrive at once
(``server.max_concurrent_uploads``, 429) and how long one may take to arrive
(``server.body_read_timeout_seconds``, 408). aiohttp itself bounds what comes before the body:
request and header lines of 8190 bytes and 128 headers (400), and a connection that sends no
complete request head within ``server.idle_timeout_seconds`` (closed; see ``server.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from dataclasses import dataclass, field
from typing import AsyncIterator

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import BodyReadTimeout, InvalidRequest, PayloadTooLarge, TooManyUploads, UnsupportedMediaType
from ..settings import ServerSettings

MAX_FIELD_BYTES = 64 * 1024
CHUNK_BYTES = 256 * 1024
MAX_FORM_PARTS = 128
"""Parts of one multipart form; every dialect's form has a handful. Without a cap, a body of
tiny parts costs per-part work up to ``max_upload_bytes``."""
UPLOAD_RETRY_AFTER_SECONDS = 1
"""Retry-After when every upload slot is taken: a slot frees as soon as a body has arrived."""
MAX_FILENAME_CHARS = 255
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Characters that reorder the text around them: ``\u202egnp.wav`` shows as ``vaw.png``."""


class UploadGate:
    """The app's upload slots and body deadline (one per app, under :data:`UPLOAD_GATE`).

    A counter, not a waiting semaphore: a client over the limit learns it at once (429 with
    Retry-After) instead of holding a connection open while it waits.
    """

    def __init__(self, max_concurrent: int, read_timeout_seconds: float) -> None:
        self._max_concurrent = max_concurrent
        self._timeout = read_timeout_seconds or None
        self._active = 0

    @contextlib.asynccontextmanager
    async def receiving(self) -> AsyncIterator[None]:
        """Hold a slot while a body is read; 429 when none is free, 408 past the deadline."""
        if self._max_concurrent and self._active >= self._max_concurrent:
            raise TooManyUploads(
                f"{self._active} uploads are already arriving (server.max_concurrent_uploads); try again shortly",
                UPLOAD_RETRY_AFTER_SECONDS,
            )
        self._active += 1
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError as exc:
            raise BodyReadTimeout(
                f"the request body did not arrive within {self._timeout:.0f} s (server.body_read_timeout_seconds)"
            ) from exc
        finally:
            self._active -= 1

    @classmethod
    def from_settings(cls, server: ServerSettings) -> UploadGate:
        return cls(server.max_concurrent_uploads, server.body_read_timeout_seconds)


UPLOAD_GATE = web.AppKey("upload_gate", UploadGate)


def _gate(request: web.Request) -> UploadGate:
    """The app's gate; an app built without one (a test's) reads bodies without these limits."""
    return request.app.get(UPLOAD_GATE) or UploadGate(0, 0)


@dataclass(frozen=True)
class UploadForm:
    file: bytes
    filename: str | None
    content_type: str | None
    fields: dict[str, str] = field(default_factory=dict)
    """Each text field's last value."""
    values: dict[str, list[str]] = field(default_factory=dict)
    """Every value of each text field, in order: array fields repeat their name (OpenAI's
    ``timestamp_granularities[]``)."""


async def read_upload_form(request: web.Request, max_bytes: int, file_field: str = "file") -> UploadForm:
    """The file part and the text fields of a ``multipart/form-data`` request.

    Raises 415 for another content type, 413 as soon as the body passes ``max_bytes``, 400 for a
    malformed body or a missing file part.
    """
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"expected a multipart/form-data body with a '{file_field}' part, got '{request.content_type or 'none'}'"
        )
    _check_declared_length(request, max_bytes)
    async with _gate(request).receiving():
        return await _read_form(request, max_bytes, file_field)


async def _read_form(request: web.Request, max_bytes: int, file_field: str) -> UploadForm:
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise InvalidRequest(f"malformed multipart body: {exc}") from exc
    file_data: bytes | None = None
    filename: str | None = None
    part_type: str | None = None
    fields: dict[str, str] = {}
    values: dict[str, list[str]] = {}
    total = 0
    parts = 0
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            parts += 1
            if parts > MAX_FORM_PARTS:
                raise InvalidRequest(f"the form has more than {MAX_FORM_PARTS} parts")
            if not isinstance(part, BodyPartReader):
                raise InvalidRequest("nested multipart bodies are not accepted")
            if part.name == file_field and file_data is None:
                file_data, total = await _read_part(part, max_bytes, total)
                filename = clean_filename(part.filename)
                part_type = part.headers.get("Content-Type")
            else:
                value, total = await _read_part(part, min(max_bytes, total + MAX_FIELD_BYTES), total)
                if part.name:
                    fields[part.name] = value.decode("utf-8", errors="replace")
                    values.setdefault(part.name, []).append(fields[part.name])
    except (ValueError, AssertionError, UnicodeDecodeError, HttpProcessingError) as exc:
        raise InvalidRequest(f"malformed multipart body: {_reason(exc)}") from exc
    if file_data is None:
        raise InvalidRequest(f"the request has no '{file_field}' part with the audio")
    return UploadForm(file=file_data, filename=filename, content_type=part_type, fields=fields, values=values)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """A raw request body (Watson, Deepgram, Azure style), refused once it passes ``max_bytes``."""
    _check_declared_length(request, max_bytes)
    chunks: list[bytes] = []
    total = 0
    async with _gate(request).receiving():
        async for chunk in request.content.iter_chunked(CHUNK_BYTES):
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLarge(_too_large(max_bytes))
            chunks.append(chunk)
    return b"".join(chunks)


def clean_filename(name: str | None) -> str | None:
    """The client's file name as something to show (pages escape it), never to use as a path
    (nothing does): without control characters (NUL, CR/LF, terminal escapes) or text-reordering
    marks, at most :data:`MAX_FILENAME_CHARS` long (its end, with the extension, kept); None
    when nothing is left. Slashes stay: ``</b>.wav`` is a name too."""
    if name is None:
        return None
    kept = "".join(c for c in name if unicodedata.category(c) != "Cc" and c not in BIDI_CONTROLS).strip()
    if len(kept) > MAX_FILENAME_CHARS:
        kept = kept[: MAX_FILENAME_CHARS - 41] + "…" + kept[-40:]
    return kept or None


def _check_declared_length(request: web.Request, max_bytes: int) -> None:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(_too_large(max_bytes))


async def _read_part(part: BodyPartReader, limit: int, total: int) -> tuple[bytes, int]:
    chunks: list[bytes] = []
    while True:
        chunk = await part.read_chunk(CHUNK_BYTES)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(_too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks), total


def _too_large(limit: int) -> str:
    return f"the upload is larger than the limit of {limit} bytes"


def _reason(exc: Exception) -> str:
    if isinstance(exc, HttpProcessingError):
        return exc.message.strip().splitlines()[0]
    return str(exc)
