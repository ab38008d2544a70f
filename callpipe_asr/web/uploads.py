"""Reading multipart uploads with the size limit enforced while streaming, not after."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

MAX_FIELD_BYTES = 64 * 1024
CHUNK_BYTES = 256 * 1024


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
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise InvalidRequest("nested multipart bodies are not accepted")
            if part.name == file_field and file_data is None:
                file_data, total = await _read_part(part, max_bytes, total)
                filename = part.filename
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
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(_too_large(max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


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
