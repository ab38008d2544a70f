"""HTTP handlers of the native JSON API: ``/api/v1/jobs``."""

from __future__ import annotations

from aiohttp import web

from ..errors import CallpipeError, NotFound, WaitTimeout
from ..jobs import Job, JobRequest
from ..providers import native
from .auth import bearer_token
from .errors import renders_errors, retry_headers
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import UploadForm, read_upload_form


def render_native_error(error: CallpipeError) -> web.Response:
    return web.json_response(native.error_document(error), status=error.status, headers=retry_headers(error))


def job_request(form: UploadForm, dialect: str, owner: str | None = None) -> JobRequest:
    return JobRequest(
        audio=form.file,
        options=native.options_from_fields(form.fields),
        filename=form.filename,
        dialect=dialect,
        owner=owner,
    )


def _owner(request: web.Request) -> str | None:
    """The caller's key identity: ``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``.

    Checked before the body is read, so a stranger's upload is refused without storing it.
    """
    presented = bearer_token(request) or request.headers.get("X-Api-Key") or None
    return request.app[KEYS].owner(presented)


async def _owned_job(request: web.Request) -> Job:
    """A job of the caller's key; another key's job is as unknown as a missing one."""
    owner = _owner(request)
    job = await request.app[RUNTIME].service.get(request.match_info["job_id"])
    if job.owner != owner:
        raise NotFound(f"no job with id '{job.id}' (it may have expired)")
    return job


@renders_errors(render_native_error)
async def create_job(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    service = request.app[RUNTIME].service
    owner = _owner(request)
    form = await read_upload_form(request, settings.server.max_upload_bytes)
    wait = native.wait_seconds_from_fields(form.fields, settings.server.sync_wait_seconds)
    job, _ = await service.submit(job_request(form, "native", owner))
    location = {"Location": f"/api/v1/jobs/{job.id}"}
    if wait > 0:
        try:
            job = await service.wait(job.id, wait)
        except WaitTimeout:
            pass
        else:
            return web.json_response(native.job_document(await service.progress(job)), status=200, headers=location)
    progress = await service.progress(job)
    return web.json_response(native.accepted_document(progress), status=202, headers=location)


@renders_errors(render_native_error)
async def get_job(request: web.Request) -> web.Response:
    job = await _owned_job(request)
    return web.json_response(native.job_document(await request.app[RUNTIME].service.progress(job)))


@renders_errors(render_native_error)
async def delete_job(request: web.Request) -> web.Response:
    job = await _owned_job(request)
    await request.app[RUNTIME].service.delete(job.id)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/jobs", create_job)
    app.router.add_get("/api/v1/jobs/{job_id}", get_job)
    app.router.add_delete("/api/v1/jobs/{job_id}", delete_job)
