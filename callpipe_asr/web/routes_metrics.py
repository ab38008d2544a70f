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


async def metrics(request: web.Request) -> web.Response:
    token = request.app[SETTINGS].metrics.token
    if token and not hmac.compare_digest((bearer_token(request) or "").encode(), token.encode()):
        return web.Response(
            status=401,
            text="a valid metrics token is required (Authorization: Bearer <metrics.token>)\n",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    runtime = request.app.get(RUNTIME)
    pool = runtime.pool if runtime is not None else None
    body = await request.app[METRICS].exposition(
        runtime.service if runtime is not None else None, pool.size if pool else 0, pool.busy if pool else 0
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
