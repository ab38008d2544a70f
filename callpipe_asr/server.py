"""Running the HTTP server: exposure check, TLS, and a graceful stop on SIGTERM.

``aiohttp.web.run_app`` stops listening at once on SIGTERM and cancels what runs after a timeout.
A PBX's voicemail job in flight deserves better: on SIGTERM (systemd's stop) the server keeps
listening but refuses new work with 503 in each dialect's shape (``/readyz`` says ``draining``
so a proxy or load balancer moves on), lets running jobs finish within
``server.shutdown_grace_seconds``, answers requests still waiting, then closes; jobs still
running then go back to the queue (durable) and run after the restart. A second signal skips
the rest of the wait. The exit status is 0: systemd's ``Restart=on-failure`` leaves it stopped.

A recognition in a native library cannot be interrupted; when one outlives the grace period its
job is handed back first, and the process then ends without joining that thread (``os._exit``
after the logs are flushed), or it would sit out the recognition it just gave up on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys

from aiohttp import web

from . import __version__
from .settings import ConfigError, ServerSettings, Settings, exposure_problem
from .web.state import RUNTIME

log = logging.getLogger(__name__)

ANSWER_SECONDS = 5.0
"""Seconds, after the drain, for answers in flight (and those just told 503) to be written."""


def run(settings: Settings, app: web.Application) -> int:
    """Serve ``app`` until SIGTERM or SIGINT; 0 after a graceful stop, 1 if it cannot listen.

    Raises :class:`ConfigError` before binding anything when the settings would expose an
    unprotected server or name a certificate that cannot be loaded.
    """
    problem = exposure_problem(settings)
    if problem:
        raise ConfigError(problem)
    ssl_context = tls_context(settings.server)
    try:
        abandoned = asyncio.run(_serve(settings, app, ssl_context))
    except OSError as exc:  # the port is taken, the address is not ours...
        log.error("cannot listen on %s:%d: %s", settings.server.host, settings.server.port, exc.strerror or exc)
        return 1
    if abandoned:
        _exit_now(0)
    return 0


def _exit_now(status: int) -> None:
    """End the process without joining threads (an abandoned recognition), logs flushed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def tls_context(server: ServerSettings) -> ssl.SSLContext | None:
    """The server's TLS context from ``tls_certificate`` and ``tls_key``; None for plain HTTP."""
    if not server.tls_certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(server.tls_certificate, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"server.tls_certificate / server.tls_key: cannot load them: {reason}") from exc
    return context


class _StopSignals:
    """SIGTERM and SIGINT: the first asks for a graceful stop, the second for a quick one."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        if self.stop.is_set():
            log.info("%s again: not waiting for running jobs any longer", signal.Signals(signum).name)
            self.hurry.set()
        else:
            log.info("%s: stopping gracefully", signal.Signals(signum).name)
            self.stop.set()


async def _serve(settings: Settings, app: web.Application, ssl_context: ssl.SSLContext | None) -> bool:
    """Serve until a stop signal, drain, close; True when recognitions were abandoned."""
    server = settings.server
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=settings.jobs.poll_interval_seconds + ANSWER_SECONDS,
        keepalive_timeout=server.idle_timeout_seconds,  # aiohttp's own default is an hour
    )
    signals = _StopSignals()
    signals.install()
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.host, server.port, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context else "http"
        log.info("callpipe-asr %s listening on %s://%s:%d/", __version__, scheme, server.host, server.port)
        await signals.stop.wait()
        finished = await drain(app, server.shutdown_grace_seconds, signals.hurry)
    finally:
        await runner.cleanup()
    log.info("stopped")
    return not finished


async def drain(app: web.Application, grace_seconds: float, hurry: asyncio.Event) -> bool:
    """Take no new work, give running jobs ``grace_seconds`` (or until ``hurry``), then answer
    the requests still waiting for jobs. True when no job was left running."""
    runtime = app.get(RUNTIME)
    if runtime is None:  # stopped before the store opened
        return True
    runtime.service.start_draining()
    finished = True
    if runtime.pool is not None and runtime.pool.busy:
        log.info("waiting up to %.0f s for %d running job(s) to finish", grace_seconds, runtime.pool.busy)
        drained = asyncio.ensure_future(runtime.pool.drain(grace_seconds))
        hurried = asyncio.ensure_future(hurry.wait())
        await asyncio.wait((drained, hurried), return_when=asyncio.FIRST_COMPLETED)
        hurried.cancel()
        finished = drained.done() and drained.result()
        if not drained.done():  # hurried: give up on the running jobs now
            drained.cancel()
            await runtime.pool.drain(0)
        if not finished:
            log.warning("jobs still running go back to the queue; they run again after the restart")
    elif runtime.pool is not None:
        await runtime.pool.drain(0)
    runtime.service.end_waits()
    return finished


__all__ = ["drain", "run", "tls_context"]
