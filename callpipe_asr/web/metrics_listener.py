"""The worker role's own ``GET /metrics`` (``metrics.worker_port``).

``callpipe-asr worker`` serves no API, so without this its job metrics (jobs by final state, audio
seconds, real-time factor, model load time, how busy its workers are) would appear nowhere. A
one-route aiohttp app on the worker's own event loop: the same text and the same token
(``metrics.token``) as the API server's ``/metrics``, on ``server.host`` (loopback by default).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web

from ..settings import ConfigError, Settings, is_loopback
from .routes_metrics import exposition_response, token_refusal

log = logging.getLogger(__name__)

Exposition = Callable[[], Awaitable[bytes]]
"""Reads the process's metrics into the Prometheus text format."""


async def start_metrics_listener(settings: Settings, exposition: Exposition) -> web.AppRunner:
    """Listen on ``server.host``:``metrics.worker_port`` until the returned runner's
    ``cleanup()``. A port that cannot be bound (taken, not ours) is a :class:`ConfigError`."""
    host, port, token = settings.server.host, settings.metrics.worker_port, settings.metrics.token

    async def metrics(request: web.Request) -> web.Response:
        refused = token_refusal(request, token)
        if refused is not None:
            return refused
        return exposition_response(await exposition())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"metrics.worker_port: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    if not token and not is_loopback(host):
        log.warning("worker metrics on %s:%d are open to anyone who reaches the port (set metrics.token)", host, port)
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return runner


__all__ = ["Exposition", "start_metrics_listener"]
