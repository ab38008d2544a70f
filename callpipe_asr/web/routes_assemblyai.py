"""HTTP handlers of the AssemblyAI dialect, at ``/v2/...`` and ``/assemblyai/v2/...``.

The SDK uploads the file (``POST /v2/upload``), creates a transcript from the ``upload_url``
it gets back (``POST /v2/transcript``) and polls ``GET /v2/transcript/{id}``. Uploads are files
in the data directory until a transcript is made from them: audio is not kept after its job
unless ``jobs.keep_audio`` says so, so an ``upload_url`` serves one transcript (as the SDK
uses it); one never used is deleted after a day. Transcripts whose audio cannot be used are
kept as small records beside the jobs, for ``jobs.retention_days``, so that polling them
answers ``status: error`` as at AssemblyAI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import AudioError, CallpipeError, InvalidRequest, NotFound, PayloadTooLarge, RemoteRequestFailed
from ..jobs import Job, JobRequest
from ..providers import assemblyai
from ..settings import Settings
from .auth import bare_authorization
from .errors import renders_errors, retry_headers
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import read_body

PREFIXES = ("", "/assemblyai")
MAX_REQUEST_JSON_BYTES = 1024 * 1024
UNUSED_UPLOAD_TTL_SECONDS = 24 * 3600.0
"""Seconds an upload no transcript was made from is kept."""
LIST_SCAN_LIMIT = 1000
"""Newest jobs of a key looked at when listing: pages reach back this far."""
SECONDS_PER_DAY = 86_400.0
UPLOAD_TOKEN_BYTES = 24
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Ids that may become file names (transcript ids and upload tokens are URL-safe base64)."""
ANONYMOUS_OWNER = "anonymous"
"""The directory of files made without API keys configured."""


class AssemblyAIFiles:
    """The dialect's files under ``<data_dir>/assemblyai``: ``uploads/<owner>/<token>`` and
    ``rejected/<owner>/<id>.json``. A directory per key keeps each key's files apart; files
    are written whole (a temporary name, then a rename), so a crash never leaves half a file
    under a real name. Blocking: callers run these methods in a thread."""

    def __init__(self, root: Path, rejected_ttl_seconds: float) -> None:
        self._uploads = root / "uploads"
        self._rejected = root / "rejected"
        self._rejected_ttl_seconds = rejected_ttl_seconds

    def save_upload(self, owner: str | None, data: bytes) -> str:
        token = secrets.token_urlsafe(UPLOAD_TOKEN_BYTES)
        _write_whole(self._uploads / _owner_dir(owner) / token, data)
        return token

    def has_upload(self, owner: str | None, token: str) -> bool:
        path = self._upload_path(owner, token)
        return path is not None and path.is_file()

    def read_upload(self, owner: str | None, token: str) -> bytes | None:
        path = self._upload_path(owner, token)
        try:
            return path.read_bytes() if path is not None else None
        except FileNotFoundError:
            return None

    def remove_upload(self, owner: str | None, token: str) -> None:
        path = self._upload_path(owner, token)
        if path is not None:
            path.unlink(missing_ok=True)

    def save_rejected(self, owner: str | None, record: dict[str, Any]) -> None:
        name = record["document"]["id"]
        _write_whole(self._rejected / _owner_dir(owner) / f"{name}.json", json.dumps(record).encode())

    def read_rejected(self, owner: str | None, transcript_id: str) -> dict[str, Any] | None:
        path = self._rejected_path(owner, transcript_id)
        try:
            return _read_record(path) if path is not None else None
        except FileNotFoundError:
            return None

    def rejected_records(self, owner: str | None) -> list[dict[str, Any]]:
        directory = self._rejected / _owner_dir(owner)
        records = []
        for path in directory.glob("*.json") if directory.is_dir() else ():
            try:
                records.append(_read_record(path))
            except FileNotFoundError:  # removed meanwhile
                continue
        return records

    def remove_rejected(self, owner: str | None, transcript_id: str) -> bool:
        path = self._rejected_path(owner, transcript_id)
        if path is None or not path.exists():
            return False
        path.unlink(missing_ok=True)
        return True

    def purge(self, now: float) -> int:
        """Delete unused uploads older than a day and expired rejected records; return how many."""
        return _purge(self._uploads, "*/*", now - UNUSED_UPLOAD_TTL_SECONDS) + _purge(
            self._rejected, "*/*.json", now - self._rejected_ttl_seconds
        )

    def _upload_path(self, owner: str | None, token: str) -> Path | None:
        return self._uploads / _owner_dir(owner) / token if SAFE_ID.match(token) else None

    def _rejected_path(self, owner: str | None, transcript_id: str) -> Path | None:
        return self._rejected / _owner_dir(owner) / f"{transcript_id}.json" if SAFE_ID.match(transcript_id) else None


def _owner_dir(owner: str | None) -> str:
    return owner or ANONYMOUS_OWNER  # owner ids are hex digests: safe as names


def _write_whole(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _read_record(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


def _purge(root: Path, pattern: str, older_than: float) -> int:
    removed = 0
    for path in root.glob(pattern) if root.is_dir() else ():
        try:
            if path.stat().st_mtime < older_than:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


FILES = web.AppKey("assemblyai_files", AssemblyAIFiles)


# --- handlers ---------------------------------------------------------------------------------


def render_assemblyai_error(error: CallpipeError) -> web.Response:
    return web.json_response(
        assemblyai.error_document(error), status=assemblyai.error_status(error), headers=retry_headers(error)
    )


def _owner(request: web.Request) -> str | None:
    """``Authorization: KEY`` as the SDK sends it (a ``Bearer`` prefix is tolerated)."""
    value = bare_authorization(request)
    if value and value.lower().startswith("bearer "):
        value = value[len("bearer ") :].strip()
    return request.app[KEYS].owner(value)


def _base_url(request: web.Request) -> str:
    """``http://host[:port]`` plus the ``/assemblyai`` prefix when the request used it."""
    prefix = PREFIXES[1] if request.path.startswith(PREFIXES[1] + "/") else ""
    return f"{request.scheme}://{request.host}{prefix}"


@renders_errors(render_assemblyai_error)
async def upload(request: web.Request) -> web.Response:
    owner = _owner(request)
    files = request.app[FILES]
    data = await read_body(request, request.app[SETTINGS].server.max_upload_bytes)
    if not data:
        raise InvalidRequest("the upload is empty")
    token = await asyncio.to_thread(files.save_upload, owner, data)
    await asyncio.to_thread(files.purge, time.time())
    return web.json_response({"upload_url": f"{_base_url(request)}/v2/upload/{token}"})


@renders_errors(render_assemblyai_error)
async def create_transcript(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    files = request.app[FILES]
    owner = _owner(request)
    parsed = assemblyai.parse_transcript_request(await read_body(request, MAX_REQUEST_JSON_BYTES))
    callback_url = _checked_webhook(parsed.render.webhook_url, settings)
    audio_url = parsed.render.audio_url
    token = await _own_upload_token(request, files, owner, audio_url)
    if token is None:
        _check_remote(audio_url, settings)  # a URL this server may not fetch is the client's 4xx now
    try:
        audio = await _upload(files, owner, token) if token else await _remote_audio(audio_url, settings)
        job, _ = await request.app[RUNTIME].service.submit(
            JobRequest(
                audio=audio,
                options=parsed.options,
                owner=owner,
                dialect=assemblyai.DIALECT,
                metadata=parsed.job_metadata(),
                callback_url=callback_url,
            )
        )
    except (AudioError, RemoteRequestFailed, PayloadTooLarge) as exc:
        document = assemblyai.rejected_document(secrets.token_urlsafe(16), parsed, exc.message)
        await asyncio.to_thread(files.save_rejected, owner, assemblyai.rejected_record(document, time.time()))
        await asyncio.to_thread(files.purge, time.time())
        await _consume_upload(files, owner, token, keep=False)
        return web.json_response(document)
    await _consume_upload(files, owner, token, keep=settings.jobs.keep_audio)
    return web.json_response(assemblyai.transcript_document(job))


def _checked_webhook(url: str | None, settings: Settings) -> str | None:
    if url is None:
        return None
    from ..integrations.callbacks import check_callback_url

    return check_callback_url(url, settings.providers)


def _check_remote(url: str, settings: Settings) -> None:
    from ..integrations.remote_audio import check_remote_url

    check_remote_url(url, settings.providers)


async def _remote_audio(url: str, settings: Settings) -> bytes:
    from ..integrations.remote_audio import fetch_remote_audio

    return await fetch_remote_audio(url, settings.providers)


async def _own_upload_token(request: web.Request, files: AssemblyAIFiles, owner: str | None, audio_url: str) -> str | None:
    """The upload id when ``audio_url`` is one of this server's ``upload_url``s: its host is
    this server's, or (behind a proxy that renames the host) the caller has that upload. None
    means a remote URL."""
    token = assemblyai.upload_token(audio_url)
    if token is None or urlsplit(audio_url).netloc == request.host:
        return token
    return token if await asyncio.to_thread(files.has_upload, owner, token) else None


async def _upload(files: AssemblyAIFiles, owner: str | None, token: str) -> bytes:
    data = await asyncio.to_thread(files.read_upload, owner, token)
    if data is None:
        raise RemoteRequestFailed(
            "Download error: this upload_url does not exist (it was already transcribed, or it expired); upload the file again"
        )
    return data


async def _consume_upload(files: AssemblyAIFiles, owner: str | None, token: str | None, *, keep: bool) -> None:
    """An upload is deleted once a transcript holds its audio (the job keeps its own copy)."""
    if token is not None and not keep:
        await asyncio.to_thread(files.remove_upload, owner, token)


async def _lookup(request: web.Request, owner: str | None, transcript_id: str) -> Job | dict[str, Any]:
    """The caller's own transcript: a job, or a rejected transcript's record."""
    try:
        job: Job | None = await request.app[RUNTIME].service.get(transcript_id)
    except NotFound:
        job = None
    if job is not None and job.dialect == assemblyai.DIALECT and (not request.app[KEYS].enabled or job.owner == owner):
        return job
    record = await asyncio.to_thread(request.app[FILES].read_rejected, owner, transcript_id)
    if record is None:
        raise NotFound(assemblyai.NOT_FOUND_MESSAGE)
    return record


@renders_errors(render_assemblyai_error)
async def get_transcript(request: web.Request) -> web.Response:
    found = await _lookup(request, _owner(request), request.match_info["transcript_id"])
    document = assemblyai.transcript_document(found) if isinstance(found, Job) else found["document"]
    return web.json_response(document)


@renders_errors(render_assemblyai_error)
async def delete_transcript(request: web.Request) -> web.Response:
    owner = _owner(request)
    transcript_id = request.match_info["transcript_id"]
    found = await _lookup(request, owner, transcript_id)
    if isinstance(found, Job):
        if not found.status.is_final:
            raise InvalidRequest("a transcript can be deleted once it is completed or has failed")
        await request.app[RUNTIME].service.delete(found.id)
        return web.json_response(assemblyai.deleted_document(assemblyai.transcript_document(found)))
    await asyncio.to_thread(request.app[FILES].remove_rejected, owner, transcript_id)
    return web.json_response(assemblyai.deleted_document(found["document"]))


@renders_errors(render_assemblyai_error)
async def list_transcripts(request: web.Request) -> web.Response:
    owner = _owner(request)
    query = assemblyai.parse_list_query(request.query)
    jobs = await request.app[RUNTIME].service.list_jobs(owner, assemblyai.DIALECT, LIST_SCAN_LIMIT)
    records = await asyncio.to_thread(request.app[FILES].rejected_records, owner)
    rows = [assemblyai.listed_job(job) for job in jobs] + [assemblyai.listed_record(r) for r in records]
    return web.json_response(assemblyai.list_document(rows, query, f"{_base_url(request)}/v2/transcript"))


async def _completed_job(request: web.Request) -> Job:
    found = await _lookup(request, _owner(request), request.match_info["transcript_id"])
    if not isinstance(found, Job):
        raise InvalidRequest(f"transcript {found['document']['id']} has status error; it has no text to export")
    return found


@renders_errors(render_assemblyai_error)
async def get_srt(request: web.Request) -> web.Response:
    return await _subtitles(request, "srt")


@renders_errors(render_assemblyai_error)
async def get_vtt(request: web.Request) -> web.Response:
    return await _subtitles(request, "vtt")


async def _subtitles(request: web.Request, subtitle_format: str) -> web.Response:
    chars = assemblyai.parse_chars_per_caption(request.query.get("chars_per_caption"))
    text = assemblyai.subtitles(await _completed_job(request), subtitle_format, chars)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


@renders_errors(render_assemblyai_error)
async def get_sentences(request: web.Request) -> web.Response:
    return web.json_response(assemblyai.sentences_document(await _completed_job(request)))


@renders_errors(render_assemblyai_error)
async def get_paragraphs(request: web.Request) -> web.Response:
    return web.json_response(assemblyai.paragraphs_document(await _completed_job(request)))


def add_routes(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[FILES] = AssemblyAIFiles(settings.data_dir / "assemblyai", settings.jobs.retention_days * SECONDS_PER_DAY)
    for prefix in PREFIXES:
        base = f"{prefix}/v2/transcript"
        app.router.add_post(f"{prefix}/v2/upload", upload)
        app.router.add_post(base, create_transcript)
        app.router.add_get(base, list_transcripts)
        app.router.add_get(base + "/{transcript_id}", get_transcript)
        app.router.add_delete(base + "/{transcript_id}", delete_transcript)
        app.router.add_get(base + "/{transcript_id}/srt", get_srt)
        app.router.add_get(base + "/{transcript_id}/vtt", get_vtt)
        app.router.add_get(base + "/{transcript_id}/sentences", get_sentences)
        app.router.add_get(base + "/{transcript_id}/paragraphs", get_paragraphs)
