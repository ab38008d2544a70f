"""``GET /metrics``: the Prometheus text format, optionally behind its own Bearer token.

A token of its own (``metrics.token``), not an API key: the monitoring system needs no right to
transcribe, and a key given to a PBX should not read the server's traffic by key name.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from ..metrics import CONTENT_TYPE
from .auth import bearer_token
from .state import METRICS, RUNTIME, SETTINGS


def token_refusal(request: web.Request, token: str) -> web.Response | None:
    """The 401 for a scrape without ``token`` (compared in constant time); None when the scrape
    may read (the token matches, or none is configured). Shared with the worker's listener."""
    if token and not hmac.compare_digest((bearer_token(request) or "").encode(), token.encode()):
        return web.Response(
            status=401,
            text="a valid metrics token is required (Authorization: Bearer <metrics.token>)\n",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return None


def exposition_response(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    refused = token_refusal(request, request.app[SETTINGS].metrics.token)
    if refused is not None:
        return refused
    runtime = request.app.get(RUNTIME)
    pool = runtime.pool if runtime is not None else None
    body = await request.app[METRICS].exposition(
        runtime.service if runtime is not None else None, pool.size if pool else 0, pool.busy if pool else 0
    )
    return exposition_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
