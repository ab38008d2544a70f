"""Error handling at the HTTP edge.

Each dialect renders our :class:`CallpipeError` in its own native shape: its handlers are wrapped
with :func:`renders_errors` and its renderer. The middleware is the last resort for everything
else (an unknown path, a bug), so a client never sees aiohttp's HTML error page or a traceback.
"""

from __future__ import annotations

import functools
import logging
from typing import Awaitable, Callable

from aiohttp import web

from ..errors import CallpipeError, PayloadTooLarge

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorRenderer = Callable[[CallpipeError], web.StreamResponse]


def renders_errors(renderer: ErrorRenderer) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except CallpipeError as exc:
                return renderer(exc)
            except web.HTTPRequestEntityTooLarge as exc:
                return renderer(PayloadTooLarge(exc.text or "the request body is too large"))

        return wrapped

    return decorate


def retry_headers(error: CallpipeError) -> dict[str, str]:
    """``Retry-After`` where the error advises a wait (a full queue, a job store that cannot
    answer for now); every dialect's renderer adds these to its own shape."""
    if error.retry_after_seconds is not None:
        return {"Retry-After": str(error.retry_after_seconds)}
    return {}


@web.middleware
async def last_resort_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(
            {"error": {"code": exc.reason.lower().replace(" ", "_"), "message": exc.text or exc.reason, "status": exc.status}},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except CallpipeError as exc:
        return web.json_response(
            {"error": {"code": exc.code, "message": exc.message, "status": exc.status}},
            status=exc.status,
            headers=retry_headers(exc),
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response(
            {"error": {"code": "internal_error", "message": "internal server error", "status": 500}}, status=500
        )
