"""HTTP handlers of the Deepgram dialect: pre-recorded ``POST /v1/listen``.

Served at ``/v1/listen`` (the v7 SDK's ``DeepgramClientEnvironment(base=...)`` and the v3 SDK's
``url`` option append it to the host) and at ``/deepgram/v1/listen``.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from ..errors import CallpipeError, InvalidRequest, RemoteAccessDenied, WaitTimeout
from ..integrations.callbacks import check_callback_url
from ..integrations.remote_audio import fetch_remote_audio
from ..jobs import JobRequest, JobStatus
from ..providers import deepgram
from ..settings import ProviderSettings, Settings
from .auth import bearer_token, token_scheme
from .errors import renders_errors, retry_headers
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import read_body

URL_BODY_MAX_BYTES = 64 * 1024
"""Bytes of a ``{"url": ...}`` JSON body."""
REQUEST_ID_HEADER = "dg-request-id"


def render_deepgram_error(error: CallpipeError, request_id: str | None = None) -> web.Response:
    """Deepgram's error document; each error gets a request id, as at Deepgram."""
    request_id = request_id or str(uuid.uuid4())
    headers = {**retry_headers(error), REQUEST_ID_HEADER: request_id}
    return web.json_response(deepgram.error_document(error, request_id), status=deepgram.error_status(error), headers=headers)


def _allowed_callback_url(url: str, settings: ProviderSettings) -> str:
    """The normalized URL; one the config does not allow is a 400, as an invalid callback is."""
    try:
        return check_callback_url(url, settings)
    except RemoteAccessDenied as exc:
        raise InvalidRequest(f"Bad Request: {exc.message}") from exc


async def _audio(request: web.Request, settings: Settings) -> bytes:
    """Raw bytes of any container (the SDK labels everything application/octet-stream), or the
    audio at the ``url`` of a JSON body when remote audio is allowed."""
    if request.content_type == "application/json":
        url = deepgram.parse_url_body(await read_body(request, URL_BODY_MAX_BYTES))
        return await fetch_remote_audio(url, settings.providers)
    return await read_body(request, settings.server.max_upload_bytes)


@renders_errors(render_deepgram_error)
async def listen(request: web.Request) -> web.Response:
    """Transcribe and answer the full response, or with ``callback`` answer ``{"request_id"}``
    at once and post the response when the job ends. A synchronous wait past
    ``server.sync_wait_seconds`` answers 504 (the SDK retries 5xx and attaches to the same job)."""
    settings = request.app[SETTINGS]
    service = request.app[RUNTIME].service
    owner = request.app[KEYS].owner(token_scheme(request, "Token") or bearer_token(request))
    parsed = deepgram.parse_listen(list(request.query.items()))
    callback_url = _allowed_callback_url(parsed.callback, settings.providers) if parsed.callback else None
    audio = await _audio(request, settings)
    job, _ = await service.submit(JobRequest(
        audio=audio,
        options=parsed.options,
        hints=parsed.hints,
        owner=owner,
        dialect=deepgram.DIALECT,
        metadata=deepgram.job_metadata(parsed, audio),
        callback_url=callback_url,
    ))
    headers = {REQUEST_ID_HEADER: job.id}
    if callback_url:
        return web.json_response(deepgram.accepted_document(job), headers=headers)
    try:
        job = await service.wait(job.id, settings.server.sync_wait_seconds)
    except WaitTimeout as exc:
        return render_deepgram_error(exc, request_id=job.id)
    if job.status is JobStatus.FAILED:
        return render_deepgram_error(deepgram.failure_error(job), request_id=job.id)
    return web.json_response(deepgram.response_document(job), headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/listen", listen)
    app.router.add_post("/deepgram/v1/listen", listen)
