"""The application factory: builds the aiohttp app without I/O; resources open in its cleanup context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..engines import ModelRegistry
from ..jobs import JobService
from ..jobs.events import JobEvents
from ..jobs.retention import purge_forever
from ..jobs.store import open_store
from ..jobs.workers import WorkerPool
from ..pipeline import Recognizer
from ..settings import Settings
from . import routes_health, routes_native, routes_page
from .errors import last_resort_errors
from .auth import KeyRing
from .state import KEYS, RUNTIME, SETTINGS, Runtime

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD_BYTES = 1024 * 1024
"""Room above ``max_upload_bytes`` for the multipart framing and text fields."""


def create_app(settings: Settings, *, run_workers: bool = True) -> web.Application:
    """The whole server. With ``run_workers`` it also recognises (one machine); without, it only
    accepts and serves jobs that other processes work on."""
    app = web.Application(
        client_max_size=settings.server.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        middlewares=[last_resort_errors],
    )
    app[SETTINGS] = settings
    app[KEYS] = KeyRing(settings.auth)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("callpipe_asr.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.cleanup_ctx.append(_job_system(run_workers))
    routes_health.add_routes(app)
    routes_native.add_routes(app)
    routes_page.add_routes(app)
    return app


def _job_system(run_workers: bool):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        store = open_store(settings)
        await store.open()
        await store.recover()
        events = JobEvents()
        service = JobService(settings, store, events)
        registry = ModelRegistry(settings, concurrency=settings.jobs.workers)
        runtime = Runtime(service=service, registry=registry, runs_workers=run_workers)
        app[RUNTIME] = runtime
        pool = WorkerPool(store, Recognizer(settings, registry), events, settings.jobs.workers, settings.jobs.poll_interval_seconds)
        background = [asyncio.create_task(purge_forever(store, settings.jobs.purge_interval_seconds))]
        if run_workers:
            background.append(asyncio.create_task(_warm_up_then_work(runtime, settings, pool)))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await pool.stop()
            service.close()
            await store.close()
            registry.close()

    return context


async def _warm_up_then_work(runtime: Runtime, settings: Settings, pool: WorkerPool) -> None:
    """Load the default model off the event loop (health checks answer meanwhile), then start
    the workers."""
    try:
        await asyncio.to_thread(runtime.registry.get, settings.default_model)
    except Exception as exc:
        runtime.model_error = str(exc)
        log.error("the default model '%s' failed to load: %s", settings.default_model, exc)
        return
    await pool.start()

