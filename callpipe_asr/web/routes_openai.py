"""HTTP handlers of the OpenAI dialect, at ``/v1/...`` and ``/openai/v1/...``.

Transcriptions and translations are synchronous: the job is stored, then the request waits for
it up to ``server.sync_wait_seconds``. On timeout the job goes on, and the SDK's retry (same
audio, options and key) attaches to it instead of recognising again.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from ..errors import CallpipeError, WaitTimeout
from ..jobs import Job, JobRequest, JobService
from ..providers import openai
from ..transcript import Task
from .auth import bearer_token
from .errors import renders_errors, retry_headers
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import read_upload_form

log = logging.getLogger(__name__)

PREFIXES = ("/v1", "/openai/v1")
"""``base_url=http://host:port/v1`` for the SDK; ``/openai/v1`` for gateways that route by provider."""
KEEPALIVE_SECONDS = 15.0
"""Seconds between SSE comments while a streamed request waits for its job."""


def render_openai_error(error: CallpipeError) -> web.Response:
    reply = openai.render_error(error)
    return web.json_response(reply.body, status=reply.status, headers={**retry_headers(error), **reply.headers})


def _owner(request: web.Request) -> str | None:
    return request.app[KEYS].owner(bearer_token(request))


@renders_errors(render_openai_error)
async def create_transcription(request: web.Request) -> web.StreamResponse:
    return await _recognize(request, Task.TRANSCRIBE)


@renders_errors(render_openai_error)
async def create_translation(request: web.Request) -> web.StreamResponse:
    """Translation into English, by a multilingual Whisper model (English speech comes back as
    its English transcript, as at OpenAI). Where only English-only models are installed (or the
    request names one), the answer is a 400 saying that translation needs a multilingual model."""
    return await _recognize(request, Task.TRANSLATE)


async def _recognize(request: web.Request, task: Task) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    service = request.app[RUNTIME].service
    owner = _owner(request)  # before the upload is read: a wrong key costs no bandwidth
    form = await read_upload_form(request, settings.server.max_upload_bytes)
    parsed = openai.parse_request(form.values, task)
    job, _ = await service.submit(
        JobRequest(audio=form.file, options=parsed.options, filename=form.filename, owner=owner, dialect=openai.DIALECT)
    )
    if parsed.stream:
        return await _stream(request, service, job, settings.server.sync_wait_seconds)
    job = await service.wait(job.id, settings.server.sync_wait_seconds)
    body = openai.render(openai.transcript_of(job), parsed)
    if isinstance(body, str):
        return web.Response(text=body, content_type="text/plain", charset="utf-8")
    return web.json_response(body)


async def _stream(request: web.Request, service: JobService, job: Job, wait_seconds: float) -> web.StreamResponse:
    """Server-sent events: deltas, then ``transcript.text.done``, then ``[DONE]``.

    The headers go out once the job is accepted (so a bad upload or a full queue still gets its
    status code); comments keep the connection alive while it runs; an error after that point
    is an ``error`` event, which the SDK raises as ``APIError``.
    """
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    await response.prepare(request)
    try:
        try:
            ended = await _wait_with_keepalive(service, job.id, wait_seconds, response)
            events = openai.stream_events(openai.transcript_of(ended))
        except CallpipeError as exc:
            events = [openai.stream_error_event(exc)]
        for event in events:
            await response.write(openai.sse_data(event))
        await response.write(openai.SSE_DONE)
        await response.write_eof()
    except ConnectionResetError:
        log.info("the client of job %s left while its stream was open; the job goes on", job.id)
    return response


async def _wait_with_keepalive(service: JobService, job_id: str, wait_seconds: float, response: web.StreamResponse) -> Job:
    deadline = time.monotonic() + wait_seconds
    while True:
        remaining = deadline - time.monotonic()
        try:
            return await service.wait(job_id, max(0.0, min(KEEPALIVE_SECONDS, remaining)))
        except WaitTimeout:
            if remaining <= KEEPALIVE_SECONDS:
                raise WaitTimeout(f"job {job_id} is still running after {wait_seconds:.0f} s; it goes on") from None
            await response.write(openai.SSE_KEEPALIVE)


@renders_errors(render_openai_error)
async def list_models(request: web.Request) -> web.Response:
    _owner(request)
    return web.json_response(openai.model_list(request.app[SETTINGS]))


@renders_errors(render_openai_error)
async def retrieve_model(request: web.Request) -> web.Response:
    _owner(request)
    return web.json_response(openai.model_document(request.match_info["model"], request.app[SETTINGS]))


def add_routes(app: web.Application) -> None:
    for prefix in PREFIXES:
        app.router.add_post(prefix + "/audio/transcriptions", create_transcription)
        app.router.add_post(prefix + "/audio/translations", create_translation)
        app.router.add_get(prefix + "/models", list_models)
        app.router.add_get(prefix + "/models/{model:.+}", retrieve_model)  # names may hold a slash
