"""HTTP handlers of the FusionPBX dialect: ``POST /transcribe``, ``POST /enqueue``, ``GET /j/{id}``.

FusionPBX cannot handle a refusal (it mails whatever body it gets, or retries at once), so its
jobs may queue past ``jobs.max_queued`` (up to ``jobs.hard_max_queued``) and ``/transcribe``
waits for the result (its curl waits up to 4500 s; we wait ``server.sync_wait_seconds``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Callable

from aiohttp import web

from ..errors import CallpipeError, NotFound, PayloadTooLarge, StoreBusy, StoreUnavailable
from ..jobs import Job, JobRequest
from ..providers import fusionpbx
from .auth import bearer_token
from .errors import Handler, retry_headers
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import UploadForm, read_upload_form

log = logging.getLogger(__name__)

STORE_RETRY_FIRST_PAUSE_SECONDS = 1.0
STORE_RETRY_MAX_PAUSE_SECONDS = 15.0

FailureRenderer = Callable[[web.Request, CallpipeError], web.Response]


def _contained(render: FailureRenderer) -> Callable[[Handler], Handler]:
    """Every failure in FusionPBX's own shape, a bug's included: the last-resort middleware's
    JSON would be mailed as the transcript, or keep a poll loop spinning."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except CallpipeError as exc:
                return render(request, exc)
            except web.HTTPRequestEntityTooLarge:
                return render(request, PayloadTooLarge("the upload is larger than the server accepts"))
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path)
                return render(request, CallpipeError("internal server error"))

        return wrapped

    return decorate


def _owner(request: web.Request) -> str | None:
    """FusionPBX sends ``Authorization: Bearer <api_key>``, with nothing after ``Bearer`` when
    no key is set; that passes only while the server has no keys configured."""
    return request.app[KEYS].owner(bearer_token(request))


async def _submit_patiently(
    request: web.Request, form: UploadForm, owner: str | None, fmt: fusionpbx.ReplyFormat, seconds: float
) -> Job:
    """:func:`_submit`, retried while the job store is locked or unreachable, for up to
    ``seconds``: FusionPBX mails whatever a failed ``/transcribe`` answers (an empty transcript),
    and its curl waits far longer than a database restart takes. A duplicate of a submission
    whose acknowledgement was lost attaches to the job it made."""
    deadline = time.monotonic() + seconds
    pause = STORE_RETRY_FIRST_PAUSE_SECONDS
    while True:
        try:
            return await _submit(request, form, owner, fmt)
        except (StoreBusy, StoreUnavailable) as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("FusionPBX upload waits for the job store (%s); again in %.0f s", exc.code, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, STORE_RETRY_MAX_PAUSE_SECONDS)


async def _submit(request: web.Request, form: UploadForm, owner: str | None, fmt: fusionpbx.ReplyFormat) -> Job:
    job, _ = await request.app[RUNTIME].service.submit(
        JobRequest(
            audio=form.file,
            options=fusionpbx.options_from_fields(form.values, fmt),
            filename=form.filename,
            owner=owner,
            dialect=fusionpbx.DIALECT,
            may_exceed_queue=True,
        )
    )
    return job


def _format_before_fields(request: web.Request) -> fusionpbx.ReplyFormat:
    """The reply format known before the body is read (the query and the config)."""
    try:
        return fusionpbx.reply_format(
            request.query.get("format"), None, request.app[SETTINGS].providers.fusionpbx_json_message
        )
    except CallpipeError:
        return fusionpbx.ReplyFormat.TEXT


def _transcribe_failure(error: CallpipeError, fmt: fusionpbx.ReplyFormat) -> web.Response:
    log.info("FusionPBX transcription failed (%d %s): %s", error.status, error.code, error.message)
    body = fusionpbx.failure_body(fmt)
    if body is None:
        return web.Response(status=error.status, headers=retry_headers(error))
    return web.json_response(body, status=error.status, headers=retry_headers(error))


@_contained(lambda request, error: _transcribe_failure(error, _format_before_fields(request)))
async def transcribe(request: web.Request) -> web.StreamResponse:
    """5.3+ ``engine=local`` and the <= 5.0 Lua ``custom`` provider: the transcript is the body."""
    settings = request.app[SETTINGS]
    fmt = _format_before_fields(request)
    try:
        owner = _owner(request)
        form = await read_upload_form(request, settings.server.max_upload_bytes)
        fmt = fusionpbx.reply_format(
            request.query.get("format"), form.fields.get("response_format"), settings.providers.fusionpbx_json_message
        )
        started = time.monotonic()
        job = await _submit_patiently(request, form, owner, fmt, settings.server.sync_wait_seconds)
        waited = time.monotonic() - started
        job = await request.app[RUNTIME].service.wait(job.id, max(0.0, settings.server.sync_wait_seconds - waited))
        body = fusionpbx.render_transcript(fusionpbx.transcript_of(job), fmt)
    except CallpipeError as exc:
        return _transcribe_failure(exc, fmt)
    return _reply(body)


def _reply(body: dict[str, Any] | str) -> web.Response:
    if isinstance(body, str):
        return web.Response(text=body, content_type="text/plain", charset="utf-8")
    return web.json_response(body)


def _enqueue_failure(request: web.Request, error: CallpipeError) -> web.Response:
    """An empty body: FusionPBX 5.1-5.2 reads it as "not JSON" and submits again (five tries)."""
    log.info("FusionPBX enqueue failed (%d %s): %s", error.status, error.code, error.message)
    return web.Response(status=error.status, headers=retry_headers(error))


@_contained(_enqueue_failure)
async def enqueue(request: web.Request) -> web.StreamResponse:
    """5.1-5.2 ``custom``: store the job and answer at once; FusionPBX polls ``/j/<id>``."""
    owner = _owner(request)
    form = await read_upload_form(request, request.app[SETTINGS].server.max_upload_bytes)
    job = await _submit(request, form, owner, fusionpbx.ReplyFormat.TEXT)  # the poll's result is text
    return web.json_response(fusionpbx.enqueued_document(job), status=201)


def _poll_failure(request: web.Request, error: CallpipeError) -> web.Response:
    status, body = fusionpbx.poll_failure(error)
    return web.json_response(body, status=status)


@_contained(_poll_failure)
async def poll(request: web.Request) -> web.StreamResponse:
    owner = _owner(request)
    job_id = request.match_info["job_id"]
    job = await request.app[RUNTIME].service.get(job_id)
    if job.owner != owner:  # another key's job is as unknown to this key as a missing one
        raise NotFound(f"no job with id '{job_id}' (it may have expired)")
    return web.json_response(fusionpbx.poll_document(job))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/transcribe", transcribe)
    app.router.add_post("/enqueue", enqueue)
    app.router.add_get("/j/{job_id}", poll)
