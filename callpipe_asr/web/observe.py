"""The outermost middleware: gives each request an id, a dialect and a client address (see
:mod:`.scope`), and records it once answered, in the metrics and as one log line.

The log line names the path without its query string (Google's dialect takes ``?key=``) and the
key by its configured name; never a key, a body or a transcript.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import StaticResource

from ..metrics import Metrics
from . import scope as request_scope
from .errors import Handler

log = logging.getLogger("callpipe_asr.web.access")

REQUEST_ID_HEADER = "X-Request-Id"
CLIENT_CLOSED = 499
"""The status recorded when the client left before the answer (nginx's convention)."""
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
QUIET_DIALECTS = ("health", "metrics", "static")
"""Probes, scrapes and static files: logged at DEBUG when they succeed, so INFO stays readable."""


def dialect_of(request: web.Request) -> str:
    """The route module that answers (``web/routes_openai.py`` -> ``openai``): a label with a
    handful of values, where a path would carry job ids."""
    route = request.match_info.route
    if isinstance(route.resource, StaticResource):
        return "static"
    module: str = getattr(route.handler, "__module__", "") or ""
    name = module.rpartition(".")[2]
    return name.removeprefix("routes_") if name.startswith("routes_") else "none"


def request_id(request: web.Request) -> str:
    """The client's (or proxy's) ``X-Request-Id`` when it is a plain token, else a new one."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    return offered if _CLIENT_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex[:16]


def observe_requests(metrics: Metrics, trusted_proxies: Sequence[str]) -> Middleware:
    """The middleware, bound to the app's metrics and trusted proxies."""
    trusted = request_scope.trusted_networks(trusted_proxies)

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        scope = request_scope.RequestScope(request_id(request), dialect_of(request), request_scope.client_address(request, trusted))
        status = 500
        with request_scope.entered(scope):
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:  # redirects, and errors the last-resort handler did not shape
                status = exc.status
                raise
            except BaseException:
                status = CLIENT_CLOSED  # cancelled: the client went away (or the server stops)
                raise
            finally:
                _record(metrics, request, scope, status, time.perf_counter() - started)

    return observe


def _record(metrics: Metrics, request: web.Request, scope: request_scope.RequestScope, status: int, seconds: float) -> None:
    metrics.request_answered(scope.dialect, status, seconds, scope.key_name, scope.denial)
    level = logging.DEBUG if scope.dialect in QUIET_DIALECTS and status < 400 else logging.INFO
    log.log(
        level,
        "%s %s",
        request.method,
        request.rel_url.raw_path,  # percent-encoded (no line breaks), without the query string
        extra={"status": status, "seconds": round(seconds, 3), "dialect": scope.dialect, "client": scope.client,
               **({"denied": scope.denial} if scope.denial else {})},
    )


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer, streamed ones included, names its request id."""
    scope = request_scope.current()
    if scope is not None:
        response.headers[REQUEST_ID_HEADER] = scope.request_id


__all__ = ["REQUEST_ID_HEADER", "add_request_id", "dialect_of", "observe_requests", "request_id"]
