"""The application factory: builds the aiohttp app without I/O; resources open in its cleanup context."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..aio import cancel_and_wait
from ..engines.registry import unload_idle_forever
from ..integrations.callbacks import CallbackDispatcher, load_callback_renderers
from ..jobs import JobService
from ..jobs.events import JobEvents
from ..jobs.retention import purge_forever
from ..jobs.store import JobStore, SharedJobStore, open_store
from ..jobs.worker_process import installed_only, register_until_done
from ..jobs.workers import WorkerPool
from ..metrics import Metrics, TimedModelRegistry
from ..pipeline import Recognizer
from ..settings import Settings
from . import routes_fusionpbx, routes_health, routes_native, routes_openai, routes_page
from . import routes_deepgram, routes_watson
from . import routes_assemblyai, routes_azure, routes_google
from . import routes_metrics
from .observe import add_request_id, observe_requests
from .errors import last_resort_errors
from .auth import KeyRing
from .state import KEYS, METRICS, RUNTIME, SETTINGS, Runtime
from .uploads import UPLOAD_GATE, UploadGate

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD_BYTES = 1024 * 1024
"""Room above ``max_upload_bytes`` for the multipart framing and text fields."""


def create_app(settings: Settings, *, run_workers: bool = True) -> web.Application:
    """The whole server. With ``run_workers`` it also recognises (one machine); without, it only
    accepts and serves jobs that other processes work on."""
    metrics = Metrics(settings)
    app = web.Application(
        client_max_size=settings.server.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        middlewares=[observe_requests(metrics, settings.server.trusted_proxies), last_resort_errors],
    )
    app.on_response_prepare.append(add_request_id)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[KEYS] = KeyRing(settings.auth)
    app[UPLOAD_GATE] = UploadGate.from_settings(settings.server)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("callpipe_asr.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.cleanup_ctx.append(_job_system(run_workers))
    routes_health.add_routes(app)
    routes_native.add_routes(app)
    routes_fusionpbx.add_routes(app)
    routes_openai.add_routes(app)
    routes_watson.add_routes(app)
    routes_deepgram.add_routes(app)
    routes_google.add_routes(app)
    routes_azure.add_routes(app)
    routes_assemblyai.add_routes(app)
    routes_page.add_routes(app)
    routes_metrics.add_routes(app)
    return app


def _job_system(run_workers: bool):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        store = open_store(settings)
        await store.open()
        await store.recover()
        events = JobEvents()
        if isinstance(store, SharedJobStore):  # PostgreSQL: other processes' wake-ups, lease upkeep
            await store.start_background(events)
        service = JobService(settings, store, events)
        registry = TimedModelRegistry(settings, concurrency=settings.jobs.workers, metrics=app[METRICS])
        runtime = Runtime(service=service, registry=registry, runs_workers=run_workers)
        app[RUNTIME] = runtime
        pool = WorkerPool(
            store, Recognizer(settings, registry), events, settings.jobs.workers, settings.jobs.poll_interval_seconds,
            observer=app[METRICS], result_retry_seconds=settings.jobs.result_retry_seconds,
        )
        runtime.pool = pool if run_workers else None
        background = [asyncio.create_task(purge_forever(store, settings.jobs.purge_interval_seconds))]
        # Runs even with callbacks off: callbacks left pending from before then end failed.
        callbacks = CallbackDispatcher(
            store, settings.providers, load_callback_renderers(), poll_interval_seconds=settings.jobs.poll_interval_seconds
        )
        await callbacks.start()
        if run_workers:
            background.append(asyncio.create_task(_warm_up_then_work(runtime, settings, pool, store)))
            background.append(asyncio.create_task(unload_idle_forever(registry)))
        try:
            yield
        finally:
            await cancel_and_wait(background)
            await callbacks.stop()
            await pool.stop()
            service.close()
            await store.close()
            registry.close()

    return context


async def _warm_up_then_work(runtime: Runtime, settings: Settings, pool: WorkerPool, store: JobStore) -> None:
    """Load the default model off the event loop (health checks answer meanwhile), then start
    the workers. On a shared store they first register the models they serve: only then do
    jobs for those models count as served, and only those are claimed."""
    try:
        await asyncio.to_thread(runtime.registry.load_at_startup)  # the default model, and any with preload
    except Exception as exc:
        runtime.model_error = str(exc)
        log.error("the default model '%s' (or a preloaded one) failed to load: %s", settings.default_model, exc)
        return
    if isinstance(store, SharedJobStore):
        # Only the installed models: jobs for the others wait for a worker that has them.
        await register_until_done(store, installed_only(settings))
    await pool.start()

