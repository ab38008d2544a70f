"""HTTP handlers of the IBM Watson Speech to Text dialect.

Every endpoint is served under ``/watson/v1/...`` (point the SDK's ``set_service_url`` at
``http://host:8000/watson``) and, where no other dialect owns the path, at the root as well
(``/v1/recognize``, ``/v1/recognitions``, ``/v1/register_callback``...). ``/v1/models`` at the
root is OpenAI's, so Watson's models are only at ``/watson/v1/models``.

Callback registrations (``register_callback``) live as long as the process: Watson requires a
URL to be registered before jobs name it, but a restart would then break every client, so here
any URL the callbacks integration allows may be named, and a registration only adds the user
secret that signs the notifications. A job copies the secret when it is created, so its
notification is still signed after a restart.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import CallpipeError, InvalidRequest, NotFound, RemoteAccessDenied
from ..integrations.callbacks import check_callback_url, verify_callback_challenge
from ..jobs import Job, JobRequest, JobStatus
from ..providers import watson
from ..settings import ProviderSettings
from .auth import basic_password, bearer_token
from .errors import renders_errors, retry_headers
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import read_body

PREFIX = "/watson"
CALLBACK_SECRETS = web.AppKey("watson_callback_secrets", dict)
"""Registered callback URL (normalized) -> its user secret or None; per app, see the module doc."""
MAX_REGISTERED_CALLBACKS = 1000
LIST_LIMIT = 100
"""``GET /v1/recognitions`` shows the latest 100 jobs, as Watson does."""
LIST_SCAN = 1000
"""Jobs of the dialect read to find those latest 100 asynchronous ones among synchronous ones."""


def render_watson_error(error: CallpipeError) -> web.Response:
    return web.json_response(watson.error_document(error), status=watson.error_status(error), headers=retry_headers(error))


def _owner(request: web.Request) -> str | None:
    """``Authorization: Basic apikey:KEY`` (curl ``-u apikey:KEY``) or ``Bearer KEY``."""
    return request.app[KEYS].owner(basic_password(request, "apikey") or bearer_token(request))


def _base_url(request: web.Request) -> str:
    """The service URL the client used, for the ``url`` fields Watson returns."""
    prefix = PREFIX if request.path.startswith(PREFIX + "/") else ""
    return f"{request.url.origin()}{prefix}"


def _allowed_callback_url(url: str, settings: ProviderSettings) -> str:
    """The normalized URL; a URL the config does not allow is Watson's 400 (not allowlisted)."""
    try:
        return check_callback_url(url, settings)
    except RemoteAccessDenied as exc:
        raise InvalidRequest(exc.message) from exc


def _job_request(audio: bytes, parsed: watson.RecognizeRequest, owner: str | None, *, asynchronous: bool,
                 callback_url: str | None = None, user_secret: str | None = None) -> JobRequest:
    return JobRequest(
        audio=audio,
        options=parsed.options,
        hints=parsed.hints,
        owner=owner,
        dialect=watson.DIALECT,
        metadata=watson.job_metadata(parsed, asynchronous=asynchronous, user_secret=user_secret),
        callback_url=callback_url,
    )


@renders_errors(render_watson_error)
async def recognize(request: web.Request) -> web.Response:
    """``POST /v1/recognize``: waits for the job up to ``server.sync_wait_seconds`` (then 504;
    the same request again attaches to the job that goes on)."""
    settings = request.app[SETTINGS]
    service = request.app[RUNTIME].service
    owner = _owner(request)
    audio = await read_body(request, settings.server.max_upload_bytes)
    parsed = watson.parse_recognize(request.query, request.headers.get("Content-Type"), audio)
    job, _ = await service.submit(_job_request(audio, parsed, owner, asynchronous=False))
    job = await service.wait(job.id, settings.server.sync_wait_seconds)
    if job.status is JobStatus.FAILED:
        raise watson.failure_error(job)
    return web.json_response(watson.results_document(job.transcript, parsed.render))


@renders_errors(render_watson_error)
async def create_job(request: web.Request) -> web.Response:
    """``POST /v1/recognitions``: 201 with the job's id and url, at once."""
    settings = request.app[SETTINGS]
    service = request.app[RUNTIME].service
    owner = _owner(request)
    audio = await read_body(request, settings.server.max_upload_bytes)
    parsed = watson.parse_recognize(request.query, request.headers.get("Content-Type"), audio, asynchronous=True)
    callback_url = _allowed_callback_url(parsed.callback_url, settings.providers) if parsed.callback_url else None
    secret = request.app[CALLBACK_SECRETS].get(callback_url) if callback_url else None
    job_request = _job_request(audio, parsed, owner, asynchronous=True, callback_url=callback_url, user_secret=secret)
    job, _ = await service.submit(job_request)
    return web.json_response(watson.job_created_document(job, _base_url(request)), status=201)


@renders_errors(render_watson_error)
async def check_jobs(request: web.Request) -> web.Response:
    """``GET /v1/recognitions``: the asking key's latest jobs only."""
    owner = _owner(request)
    jobs = await request.app[RUNTIME].service.list_jobs(owner, watson.DIALECT, LIST_SCAN)
    return web.json_response(watson.jobs_document([job for job in jobs if watson.is_recognition_job(job)][:LIST_LIMIT]))


async def _own_job(request: web.Request) -> Job:
    """The job named in the path if the asking key made it; another key's job does not exist."""
    owner = _owner(request)
    job_id = request.match_info["job_id"]
    job = await request.app[RUNTIME].service.get(job_id)
    if job.owner != owner or not watson.is_recognition_job(job):
        raise NotFound(f"no job with id '{job_id}' (it may have expired)")
    return job


@renders_errors(render_watson_error)
async def check_job(request: web.Request) -> web.Response:
    job = await _own_job(request)
    return web.json_response(watson.job_document(job, _base_url(request)))


@renders_errors(render_watson_error)
async def delete_job(request: web.Request) -> web.Response:
    """``DELETE /v1/recognitions/{id}``: 204; Watson refuses while the job is processed."""
    job = await _own_job(request)
    if job.status is JobStatus.RUNNING:
        raise InvalidRequest(f"Unable to delete job {job.id} while it is being processed; delete it once it has ended")
    await request.app[RUNTIME].service.delete(job.id)
    return web.Response(status=204)


@renders_errors(render_watson_error)
async def register_callback(request: web.Request) -> web.Response:
    """``POST /v1/register_callback?callback_url=&user_secret=``: the URL must echo a GET
    challenge (signed with the secret) within 5 s; 201 ``created``, 200 ``already created``."""
    _owner(request)
    providers = request.app[SETTINGS].providers
    raw_url = _required(request, "callback_url")
    callback_url = _allowed_callback_url(raw_url, providers)
    registry = request.app[CALLBACK_SECRETS]
    if callback_url in registry:
        return web.json_response(watson.register_status_document(raw_url, created=False), status=200)
    if len(registry) >= MAX_REGISTERED_CALLBACKS:
        raise InvalidRequest(f"at most {MAX_REGISTERED_CALLBACKS} callback URLs can be registered; unregister some first")
    user_secret = request.query.get("user_secret") or None
    try:
        await verify_callback_challenge(callback_url, user_secret, providers)
    except RemoteAccessDenied as exc:
        raise InvalidRequest(exc.message) from exc
    registry[callback_url] = user_secret
    return web.json_response(watson.register_status_document(raw_url, created=True), status=201)


@renders_errors(render_watson_error)
async def unregister_callback(request: web.Request) -> web.Response:
    """``POST /v1/unregister_callback?callback_url=``: 200, or 404 for a URL not registered."""
    _owner(request)
    raw_url = _required(request, "callback_url")
    registry = request.app[CALLBACK_SECRETS]
    for key in (raw_url, _normalized_or_raw(raw_url, request.app[SETTINGS].providers)):
        if key in registry:
            del registry[key]
            return web.Response(status=200)
    raise NotFound(f"The callback URL {raw_url} is not registered")


def _normalized_or_raw(url: str, settings: ProviderSettings) -> str:
    try:
        return check_callback_url(url, settings)
    except CallpipeError:
        return url


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name, "").strip()
    if not value:
        raise InvalidRequest(f"The parameter '{name}' is required")
    return value


@renders_errors(render_watson_error)
async def list_models(request: web.Request) -> web.Response:
    _owner(request)
    return web.json_response(watson.models_document(request.app[SETTINGS], _base_url(request)))


@renders_errors(render_watson_error)
async def get_model(request: web.Request) -> web.Response:
    _owner(request)
    model_id = request.match_info["model_id"]
    document = watson.model_document(model_id, request.app[SETTINGS], _base_url(request))
    if document is None:
        raise NotFound(f"Model {model_id} not found")
    return web.json_response(document)


def add_routes(app: web.Application) -> None:
    app[CALLBACK_SECRETS] = {}
    for prefix in (PREFIX, ""):
        app.router.add_post(f"{prefix}/v1/recognize", recognize)
        app.router.add_post(f"{prefix}/v1/recognitions", create_job)
        app.router.add_get(f"{prefix}/v1/recognitions", check_jobs)
        app.router.add_get(f"{prefix}/v1/recognitions/{{job_id}}", check_job)
        app.router.add_delete(f"{prefix}/v1/recognitions/{{job_id}}", delete_job)
        app.router.add_post(f"{prefix}/v1/register_callback", register_callback)
        app.router.add_post(f"{prefix}/v1/unregister_callback", unregister_callback)
    app.router.add_get(f"{PREFIX}/v1/models", list_models)
    app.router.add_get(f"{PREFIX}/v1/models/{{model_id}}", get_model)
