"""HTTP handlers of the native JSON API: ``/api/v1/jobs``."""

from __future__ import annotations

from aiohttp import web

from ..errors import CallpipeError, WaitTimeout
from ..jobs import JobRequest
from ..providers import native
from .errors import renders_errors, retry_headers
from .state import RUNTIME, SETTINGS
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


@renders_errors(render_native_error)
async def create_job(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    service = request.app[RUNTIME].service
    form = await read_upload_form(request, settings.server.max_upload_bytes)
    wait = native.wait_seconds_from_fields(form.fields, settings.server.sync_wait_seconds)
    job, _ = await service.submit(job_request(form, "native"))
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
    service = request.app[RUNTIME].service
    job = await service.get(request.match_info["job_id"])
    return web.json_response(native.job_document(await service.progress(job)))


@renders_errors(render_native_error)
async def delete_job(request: web.Request) -> web.Response:
    await request.app[RUNTIME].service.delete(request.match_info["job_id"])
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/jobs", create_job)
    app.router.add_get("/api/v1/jobs/{job_id}", get_job)
    app.router.add_delete("/api/v1/jobs/{job_id}", delete_job)
