"""The upload page: upload a recording, get redirected to its transcript.

Works without JavaScript (a plain form post, then a page that refreshes itself); with it, the
upload shows its progress and the text can be copied with one click. Everything shown is
escaped by Jinja2's autoescape: the file name is attacker-controlled.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from .. import formats
from ..errors import CallpipeError, EmptyAudio, JobFailed, NotFound, PayloadTooLarge
from ..jobs import Job, JobProgress, JobStatus
from ..providers import native
from .errors import retry_headers
from .routes_native import job_request
from .state import RUNTIME, SETTINGS
from .uploads import read_upload_form

REFRESH_SECONDS = 2
TEXT_PLAIN = "text/plain"
DOWNLOAD_FORMATS = ("txt", "json", "srt", "vtt")


def _wants_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/html" in accept or "application/xhtml+xml" in accept


def _render_form(request: web.Request, error: CallpipeError | None = None, language: str | None = None) -> web.Response:
    settings = request.app[SETTINGS]
    context: dict[str, Any] = {
        "error": error.message if error else None,
        "max_upload": _size(settings.server.max_upload_bytes),
        "max_duration": _duration(settings.audio.max_duration_seconds),
        "language": language,
    }
    status = error.status if error else 200
    response = aiohttp_jinja2.render_template("index.html", request, context, status=status)
    if error is not None:
        response.headers.update(retry_headers(error))
    return response


def _size(n_bytes: int) -> str:
    """``100 MiB``, ``1.5 MiB``, ``20 KiB``: the limit as people read it (never ``0 MiB``)."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n_bytes} bytes"


def _duration(seconds: float) -> str:
    if seconds >= 2 * 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"


async def index(request: web.Request) -> web.Response:
    return _render_form(request)


async def upload(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    language: str | None = None
    try:
        try:
            form = await read_upload_form(request, settings.server.max_upload_bytes)
        except web.HTTPRequestEntityTooLarge as exc:
            raise PayloadTooLarge(f"the upload is larger than the limit of {settings.server.max_upload_bytes} bytes") from exc
        language = form.fields.get("language")
        if not form.file:
            raise _no_file_chosen()
        job, _ = await request.app[RUNTIME].service.submit(job_request(form, "page"))
    except CallpipeError as exc:
        if request.headers.get("X-Requested-With") == "fetch":  # the page's script shows the message itself
            return web.json_response(native.error_document(exc), status=exc.status, headers=retry_headers(exc))
        return _render_form(request, exc, language)
    raise web.HTTPSeeOther(f"/transcripts/{job.id}")


def _no_file_chosen() -> CallpipeError:
    return EmptyAudio("choose a recording to upload (the file was empty)")


async def transcript_page(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    service = request.app[RUNTIME].service
    html = _wants_html(request)
    try:
        job = await service.get(job_id)
    except NotFound as exc:
        if html:
            return aiohttp_jinja2.render_template("not_found.html", request, {"message": exc.message}, status=404)
        return web.Response(text=exc.message + "\n", status=404, content_type=TEXT_PLAIN)
    progress = await service.progress(job)
    if html:
        return _render_job(request, progress)
    return _plain_text(progress)


def _render_job(request: web.Request, progress: JobProgress) -> web.Response:
    job = progress.job
    context = {
        "job": job,
        "progress": progress,
        "refresh_seconds": REFRESH_SECONDS,
        "text": job.transcript.text if job.transcript else "",
        "segments": job.transcript.segments if job.transcript else (),
        "formats": DOWNLOAD_FORMATS,
    }
    response = aiohttp_jinja2.render_template("transcript.html", request, context)
    response.headers["Cache-Control"] = "no-store"
    return response


def _plain_text(progress: JobProgress) -> web.Response:
    job = progress.job
    if job.status is JobStatus.DONE and job.transcript is not None:
        return web.Response(text=formats.to_text(job.transcript), content_type=TEXT_PLAIN)
    if job.status is JobStatus.FAILED:
        return web.Response(text=f"failed: {job.error}\n", status=JobFailed.status, content_type=TEXT_PLAIN)
    line = job.status.value
    if progress.queue_position is not None:
        line += f" (position {progress.queue_position} in the queue)"
    return web.Response(
        text=line + "\n", status=202, content_type=TEXT_PLAIN, headers={"Retry-After": str(REFRESH_SECONDS)}
    )


async def transcript_download(request: web.Request) -> web.StreamResponse:
    job_id, ext = request.match_info["job_id"], request.match_info["ext"]
    service = request.app[RUNTIME].service
    try:
        job = await service.get(job_id)
    except NotFound as exc:
        if ext == "json":
            return web.json_response(native.error_document(exc), status=404)
        return web.Response(text=exc.message + "\n", status=404, content_type=TEXT_PLAIN)
    progress = await service.progress(job)
    if ext == "json":
        return web.json_response(native.job_document(progress))
    if job.status is not JobStatus.DONE or job.transcript is None:
        return _plain_text(progress)
    body, content_type = _rendered(job, ext)
    return web.Response(
        text=body,
        content_type=content_type,
        headers={"Content-Disposition": f'inline; filename="transcript-{job.id}.{ext}"'},
    )


def _rendered(job: Job, ext: str) -> tuple[str, str]:
    assert job.transcript is not None
    if ext == "srt":
        return formats.to_srt(job.transcript), "application/x-subrip"
    if ext == "vtt":
        return formats.to_vtt(job.transcript), "text/vtt"
    return formats.to_text(job.transcript), TEXT_PLAIN


async def transcript_audio(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    service = request.app[RUNTIME].service
    job = await service.get(job_id)
    audio = await service.audio(job_id)
    if audio is None:
        raise NotFound("the recording is no longer kept")
    return web.Response(body=audio, content_type=job.content_type or "application/octet-stream")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_post("/", upload)
    app.router.add_get("/transcripts/{job_id:[A-Za-z0-9_-]+}", transcript_page)
    app.router.add_get("/transcripts/{job_id:[A-Za-z0-9_-]+}.{ext:txt|json|srt|vtt}", transcript_download)
    app.router.add_get("/transcripts/{job_id:[A-Za-z0-9_-]+}/audio", transcript_audio)
    app.router.add_static("/static", str(_static_dir()), name="static")


def _static_dir() -> Any:
    return resources.files("callpipe_asr.web").joinpath("static")
