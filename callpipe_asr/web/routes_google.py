"""HTTP handlers of the Google Cloud Speech dialect (v1 and v1p1beta1, REST).

Served at Google's own paths (``/v1/speech:recognize``...) so the SDK needs only
``api_endpoint="http://host:port"``, and under ``/google`` for gateways that route by provider.
``speech:recognize`` waits for its job up to ``server.sync_wait_seconds`` (504
DEADLINE_EXCEEDED after that; the job goes on and a retry attaches to it);
``speech:longrunningrecognize`` answers at once with an operation the client polls.
"""

from __future__ import annotations

import time

from aiohttp import web

from ..errors import AuthenticationFailed, CallpipeError, NotFound
from ..jobs import Job, JobRequest, JobService
from ..providers import google
from ..settings import Settings
from .auth import InvalidKey, bearer_token
from .errors import renders_errors, retry_headers
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import read_body

PREFIXES = ("", "/google")


def render_google_error(error: CallpipeError) -> web.Response:
    status, _ = google.error_status(error)
    return web.json_response(google.error_document(error), status=status, headers=retry_headers(error))


def _owner(request: web.Request) -> str | None:
    """The caller, from ``?key=``, ``x-goog-api-key`` or ``Authorization: Bearer``, each answered
    the way Google answers it when wrong or missing."""
    api_key = request.query.get("key") or request.headers.get("x-goog-api-key")
    try:
        return request.app[KEYS].owner(api_key or bearer_token(request))
    except InvalidKey as exc:
        raise google.rejected_credentials(api_key_sent=bool(api_key)) from exc
    except AuthenticationFailed as exc:
        raise google.missing_credentials() from exc


def _api_version(request: web.Request) -> str:
    """``v1p1beta1`` or ``v1``, from the path: it decides the ``@type`` of operations."""
    return "v1p1beta1" if "/v1p1beta1/" in request.path else "v1"


async def _submit(request: web.Request) -> tuple[Job, google.RecognizeRequest]:
    settings = request.app[SETTINGS]
    owner = _owner(request)  # before the body is read: a wrong key costs no bandwidth
    body = await read_body(request, google.max_body_bytes(settings.server.max_upload_bytes))
    parsed = google.parse_request(body)
    audio = parsed.content if parsed.content is not None else await _remote_audio(parsed.uri, settings)
    job, _ = await request.app[RUNTIME].service.submit(
        JobRequest(
            audio=audio,
            options=parsed.options,
            hints=parsed.hints_for(audio),
            owner=owner,
            dialect=google.DIALECT,
            metadata=parsed.render.to_metadata(),
        )
    )
    return job, parsed


async def _remote_audio(uri: str | None, settings: Settings) -> bytes:
    """An http(s) ``audio.uri``, fetched only where ``providers.allow_remote_audio`` lets it."""
    from ..integrations.remote_audio import fetch_remote_audio

    assert uri is not None  # parse_request sets content or uri
    return await fetch_remote_audio(uri, settings.providers)


@renders_errors(render_google_error)
async def recognize(request: web.Request) -> web.Response:
    job, parsed = await _submit(request)
    ended = await request.app[RUNTIME].service.wait(job.id, request.app[SETTINGS].server.sync_wait_seconds)
    return web.json_response(google.recognize_response(google.transcript_of(ended), parsed.render, ended.id))


@renders_errors(render_google_error)
async def long_running_recognize(request: web.Request) -> web.Response:
    job, _ = await _submit(request)
    progress = await request.app[RUNTIME].service.progress(job)
    return web.json_response(google.operation_document(progress, _api_version(request), time.time()))


@renders_errors(render_google_error)
async def get_operation(request: web.Request) -> web.Response:
    owner = _owner(request)
    service = request.app[RUNTIME].service
    job = await _own_job(request, service, request.match_info["name"], owner)
    progress = await service.progress(job)
    return web.json_response(google.operation_document(progress, _api_version(request), time.time()))


@renders_errors(render_google_error)
async def list_operations(request: web.Request) -> web.Response:
    owner = _owner(request)
    jobs = await request.app[RUNTIME].service.list_jobs(owner, google.DIALECT)
    return web.json_response(google.operations_document(jobs, _api_version(request), time.time()))


async def _own_job(request: web.Request, service: JobService, name: str, owner: str | None) -> Job:
    """The caller's own Google operation; another key's job, or another dialect's, is not found."""
    try:
        job: Job | None = await service.get(name)
    except NotFound:
        job = None
    if job is None or job.dialect != google.DIALECT or (request.app[KEYS].enabled and job.owner != owner):
        raise NotFound(f"Operation '{name}' not found.")
    return job


def add_routes(app: web.Application) -> None:
    for prefix in PREFIXES:
        for version in google.API_VERSIONS:
            base = f"{prefix}/{version}"
            app.router.add_post(f"{base}/speech:recognize", recognize)
            app.router.add_post(f"{base}/speech:longrunningrecognize", long_running_recognize)
            app.router.add_get(f"{base}/operations", list_operations)
            app.router.add_get(f"{base}/operations/{{name:.+}}", get_operation)  # Google's {name=**}
