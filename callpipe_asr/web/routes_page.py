"""The upload page: upload a recording, get redirected to its transcript.

Works without JavaScript (a plain form post, then a page that refreshes itself); with it, the
upload shows its progress and the text can be copied with one click. Everything shown is
escaped by Jinja2's autoescape: the file name is attacker-controlled.

When keys are configured the pages ask for one (``/login``, a session cookie: :mod:`.sessions`)
or take ``Authorization: Bearer KEY`` (scripts), and show each key only its own transcripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from .. import formats
from ..engines.sources import installed_models
from ..errors import AuthenticationFailed, CallpipeError, EmptyAudio, JobFailed, NotFound, PayloadTooLarge, PermissionDenied
from ..jobs import Job, JobProgress, JobStatus
from ..providers import native
from . import sessions
from .auth import bearer_token
from .errors import retry_headers
from .routes_native import job_request
from .scope import forwarded_https, trusted_networks
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import read_upload_form

REFRESH_SECONDS = 2
TEXT_PLAIN = "text/plain"
DOWNLOAD_FORMATS = ("txt", "json", "srt", "vtt")
FORM_MAX_BYTES = 8 * 1024
"""Bytes of a login or logout form."""


@dataclass(frozen=True)
class PageUser:
    """Who is looking at the pages: nobody in particular without keys, else a key's owner."""

    owner: str | None = None
    key_name: str | None = None
    session: sessions.Session | None = None
    """The login session, when the key came from the cookie (its forms carry CSRF tokens)."""


def _page_user(request: web.Request) -> PageUser:
    """The key behind a page request: ``Bearer`` (scripts) or the session cookie. Raises
    :class:`AuthenticationFailed` without either, and the key ring's 403/429 errors."""
    keys = request.app[KEYS]
    if not keys.enabled:
        return PageUser()
    presented = bearer_token(request)
    if presented:
        policy = keys.identify(presented)
        assert policy is not None  # keys are configured
        return PageUser(policy.owner, policy.name)
    session = sessions.read(request.app[sessions.SESSION_SECRET], request.cookies.get(sessions.SESSION_COOKIE))
    policy = keys.by_name(session.key_name, session.owner) if session else None
    if session is None or policy is None:
        raise AuthenticationFailed("log in with an API key to use this page")
    keys.admit(policy)
    return PageUser(policy.owner, policy.name, session)


def _user_or_reply(request: web.Request) -> PageUser | web.StreamResponse:
    """The page's user, or the answer for one who may not see it: browsers go to the login
    form, scripts get the status as text (401, 403, 429 with Retry-After)."""
    try:
        return _page_user(request)
    except CallpipeError as exc:
        if _wants_html(request) and request.method == "GET":
            if isinstance(exc, AuthenticationFailed):
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}") from exc
            return _render_login(request, exc)
        return web.Response(text=exc.message + "\n", status=exc.status, content_type=TEXT_PLAIN, headers=retry_headers(exc))


async def _own_job(request: web.Request, user: PageUser, job_id: str) -> Job:
    """The job, if this user may see it: with keys, another key's job is as unknown as a missing one."""
    job = await request.app[RUNTIME].service.get(job_id)
    if request.app[KEYS].enabled and job.owner != user.owner:
        raise NotFound(f"no job with id '{job_id}' (it may have expired)")
    return job


def _is_https(request: web.Request) -> bool:
    return forwarded_https(request, trusted_networks(request.app[SETTINGS].server.trusted_proxies))


def _render(request: web.Request, template: str, context: dict[str, Any], user: PageUser | None, status: int = 200) -> web.Response:
    """A page, with the logout form (and its CSRF token) when a session shows it."""
    session = user.session if user else None
    extra = {"key_name": user.key_name if user else None, "csrf_token": None}
    if session is not None:
        extra["csrf_token"] = sessions.csrf_token(request.app[sessions.SESSION_SECRET], session.cookie)
    response = aiohttp_jinja2.render_template(template, request, {**context, **extra}, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _wants_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/html" in accept or "application/xhtml+xml" in accept


def _render_form(
    request: web.Request, user: PageUser, error: CallpipeError | None = None, language: str | None = None
) -> web.Response:
    settings = request.app[SETTINGS]
    context: dict[str, Any] = {
        "error": error.message if error else None,
        "max_upload": _size(settings.server.max_upload_bytes),
        "max_duration": _duration(settings.audio.max_duration_seconds),
        "language": language,
        "languages": native.language_menu(settings, installed_models(settings)),
    }
    status = error.status if error else 200
    response = _render(request, "index.html", context, user, status)
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


async def index(request: web.Request) -> web.StreamResponse:
    user = _user_or_reply(request)
    if not isinstance(user, PageUser):
        return user
    return _render_form(request, user)


async def upload(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    language: str | None = None
    user = PageUser()
    try:
        user = _page_user(request)  # before the upload is read: a stranger's upload costs nothing
        try:
            form = await read_upload_form(request, settings.server.max_upload_bytes)
        except web.HTTPRequestEntityTooLarge as exc:
            raise PayloadTooLarge(f"the upload is larger than the limit of {settings.server.max_upload_bytes} bytes") from exc
        language = form.fields.get("language")
        _check_csrf(request, user, form.fields.get(sessions.CSRF_FIELD))
        if not form.file:
            raise _no_file_chosen()
        job, _ = await request.app[RUNTIME].service.submit(job_request(form, "page", user.owner))
    except CallpipeError as exc:
        if request.headers.get("X-Requested-With") == "fetch":  # the page's script shows the message itself
            return web.json_response(native.error_document(exc), status=exc.status, headers=retry_headers(exc))
        if isinstance(exc, AuthenticationFailed):
            return _render_login(request, exc)
        return _render_form(request, user, exc, language)
    raise web.HTTPSeeOther(f"/transcripts/{job.id}")


def _check_csrf(request: web.Request, user: PageUser, presented: str | None) -> None:
    """A form posted with the session cookie must carry that session's token (a Bearer key
    comes from a script, which no other site can make a browser send)."""
    if user.session is None:
        return
    if not sessions.csrf_valid(request.app[sessions.SESSION_SECRET], user.session.cookie, presented):
        raise PermissionDenied("the form is out of date: reload the page and send it again")


def _no_file_chosen() -> CallpipeError:
    return EmptyAudio("choose a recording to upload (the file was empty)")


async def transcript_page(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    service = request.app[RUNTIME].service
    html = _wants_html(request)
    user = _user_or_reply(request)
    if not isinstance(user, PageUser):
        return user
    try:
        job = await _own_job(request, user, job_id)
    except NotFound as exc:
        if html:
            return _render(request, "not_found.html", {"message": exc.message}, user, status=404)
        return web.Response(text=exc.message + "\n", status=404, content_type=TEXT_PLAIN)
    progress = await service.progress(job)
    if html:
        return _render_job(request, progress, user)
    return _plain_text(progress)


def _render_job(request: web.Request, progress: JobProgress, user: PageUser) -> web.Response:
    job = progress.job
    context = {
        "job": job,
        "progress": progress,
        "refresh_seconds": REFRESH_SECONDS,
        "text": job.transcript.text if job.transcript else "",
        "segments": job.transcript.segments if job.transcript else (),
        "formats": DOWNLOAD_FORMATS,
    }
    return _render(request, "transcript.html", context, user)


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
    user = _user_or_reply(request)
    if not isinstance(user, PageUser):
        return user
    try:
        job = await _own_job(request, user, job_id)
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
    user = _user_or_reply(request)
    if not isinstance(user, PageUser):
        return user
    job = await _own_job(request, user, job_id)
    audio = await service.audio(job_id)
    if audio is None:
        raise NotFound("the recording is no longer kept")
    return web.Response(body=audio, content_type=job.content_type or "application/octet-stream")


# --- login and logout (only with keys configured) ---------------------------------------------


def _render_login(request: web.Request, error: CallpipeError | None = None, next_path: str = "/") -> web.Response:
    """The login form, with a fresh CSRF token in its own cookie."""
    token = sessions.new_secret().hex()
    context = {
        "error": error.message if error else None,
        "login_token": sessions.csrf_token(request.app[sessions.SESSION_SECRET], token),
        "next": next_path,
    }
    response = _render(request, "login.html", context, None, status=error.status if error else 200)
    if error is not None:
        response.headers.update(retry_headers(error))
    sessions.set_cookie(response, sessions.LOGIN_COOKIE, token, sessions.LOGIN_FORM_SECONDS, _is_https(request))
    return response


def _local_path(value: str | None) -> str:
    """Where to go after the login: a path on this server only (never ``//elsewhere``)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def login_form(request: web.Request) -> web.StreamResponse:
    if not request.app[KEYS].enabled:
        raise web.HTTPSeeOther("/")
    return _render_login(request, next_path=_local_path(request.query.get("next")))


def _small_form(request: web.Request) -> None:
    """A login or logout form is a few hundred bytes: refuse a big body before reading it into
    memory (these forms are reachable without a key)."""
    if request.content_length is None or request.content_length > FORM_MAX_BYTES:
        raise PayloadTooLarge(f"a form of at most {FORM_MAX_BYTES} bytes (with Content-Length) is expected")


async def login(request: web.Request) -> web.StreamResponse:
    keys = request.app[KEYS]
    if not keys.enabled:
        raise web.HTTPSeeOther("/")
    secret = request.app[sessions.SESSION_SECRET]
    try:
        _small_form(request)
    except PayloadTooLarge as exc:
        return _render_login(request, exc)
    form = await request.post()
    next_path = _local_path(str(form.get("next", "")))
    login_cookie = request.cookies.get(sessions.LOGIN_COOKIE)
    if not sessions.csrf_valid(secret, login_cookie, str(form.get(sessions.CSRF_FIELD, ""))):
        return _render_login(request, PermissionDenied("the login form is out of date: send it again"), next_path)
    try:
        policy = keys.identify(str(form.get("key", "")).strip())
    except CallpipeError as exc:
        return _render_login(request, exc, next_path)
    assert policy is not None  # keys are configured
    response = web.HTTPSeeOther(next_path)
    https = _is_https(request)
    sessions.set_cookie(response, sessions.SESSION_COOKIE, sessions.issue(secret, policy), sessions.SESSION_SECONDS, https)
    sessions.clear_cookie(response, sessions.LOGIN_COOKIE, https)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    secret = request.app[sessions.SESSION_SECRET]
    session = sessions.read(secret, request.cookies.get(sessions.SESSION_COOKIE))
    try:
        _small_form(request)
    except PayloadTooLarge as exc:
        return web.Response(text=exc.message + "\n", status=exc.status, content_type=TEXT_PLAIN)
    form = await request.post()
    if session is not None and not sessions.csrf_valid(secret, session.cookie, str(form.get(sessions.CSRF_FIELD, ""))):
        return web.Response(text="the form is out of date: reload the page\n", status=403, content_type=TEXT_PLAIN)
    response = web.HTTPSeeOther("/login" if request.app[KEYS].enabled else "/")
    sessions.clear_cookie(response, sessions.SESSION_COOKIE, _is_https(request))
    raise response


def add_routes(app: web.Application) -> None:
    app[sessions.SESSION_SECRET] = sessions.new_secret()
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", index)
    app.router.add_post("/", upload)
    app.router.add_get("/transcripts/{job_id:[A-Za-z0-9_-]+}", transcript_page)
    app.router.add_get("/transcripts/{job_id:[A-Za-z0-9_-]+}.{ext:txt|json|srt|vtt}", transcript_download)
    app.router.add_get("/transcripts/{job_id:[A-Za-z0-9_-]+}/audio", transcript_audio)
    app.router.add_static("/static", str(_static_dir()), name="static")


def _static_dir() -> Any:
    return resources.files("callpipe_asr.web").joinpath("static")
