"""The worker role: ``callpipe-asr worker`` claims and runs jobs from the shared (PostgreSQL)
store and serves no API. Add machines by starting more of these. With ``metrics.worker_port``
set it answers ``GET /metrics`` there for its own jobs (see :mod:`..web.metrics_listener`).

It loads every model it serves before it registers them, so jobs are never claimed by a worker
that cannot run them. SIGTERM or SIGINT stop it cleanly: the job it is running goes back to the
queue without counting an attempt, and its registration is marked stopped. SIGKILL, a crash or a
lost network are the lease's business: another worker claims the job once the lease runs out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal

from ..engines import ModelRegistry
from ..engines.sources import installed_models
from ..metrics import Metrics, TimedModelRegistry
from ..pipeline import Recognizer
from ..settings import ConfigError, Settings
from .events import JobEvents
from .service import JobService
from .store import SharedJobStore, open_store
from .workers import WorkerPool

log = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    """Run a worker process until SIGTERM or SIGINT; the exit status."""

    async def until_stopped() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(settings, stop)

    asyncio.run(until_stopped())
    return 0


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Claim and run jobs until ``stop`` is set, then hand back what is running and close."""
    settings = installed_only(settings)
    store = open_store(settings)
    if not isinstance(store, SharedJobStore):
        raise ConfigError("a separate worker needs jobs.store: postgresql://... (SQLite jobs belong to one serve process)")
    metrics = Metrics(settings)
    registry = TimedModelRegistry(settings, concurrency=settings.jobs.workers, metrics=metrics)
    await store.open()
    events = JobEvents()
    service = JobService(settings, store, events)  # only for the queue gauges of a scrape
    pool: WorkerPool | None = None

    async def exposition() -> bytes:
        return await metrics.exposition(service, pool.size if pool else 0, pool.busy if pool else 0)

    listener = None
    try:
        if settings.metrics.worker_port:  # first, so a port that cannot be bound stops the start
            from ..web.metrics_listener import start_metrics_listener

            listener = await start_metrics_listener(settings, exposition)
        await store.recover()
        await store.start_background(events)
        if not await _load_models(registry, settings.served_models, stop):
            return
        await register_until_done(store, settings)
        pool = WorkerPool(
            store, Recognizer(settings, registry), events, settings.jobs.workers, settings.jobs.poll_interval_seconds,
            observer=metrics, result_retry_seconds=settings.jobs.result_retry_seconds,
        )
        await pool.start()
        log.info("worker ready: %d slot(s) for %s", settings.jobs.workers, ", ".join(settings.served_models))
        try:
            await stop.wait()
            log.info("worker stopping: running jobs go back to the queue")
        finally:
            await pool.stop()
    finally:
        if listener is not None:
            await listener.cleanup()
        service.close()
        await store.close()
        registry.close()


def installed_only(settings: Settings) -> Settings:
    """``settings`` serving only the served models that are installed here: a model whose extra
    is missing on this machine (the default config's multilingual ``base`` without
    ``callpipe-asr[multilingual]``) is neither loaded nor registered, so its jobs wait for a
    worker that has it instead of failing this one at start."""
    installed = installed_models(settings)
    served = tuple(name for name in settings.served_models if name in installed)
    for name in settings.served_models:
        if name not in installed:
            log.warning("model %s is not installed here; this worker does not serve it", name)
    if not served:
        raise ConfigError(f"none of the models this worker should serve ({', '.join(settings.served_models)}) is installed")
    if served == settings.served_models:
        return settings
    return dataclasses.replace(settings, jobs=dataclasses.replace(settings.jobs, serve_models=served))


async def _load_models(registry: ModelRegistry, names: tuple[str, ...], stop: asyncio.Event) -> bool:
    """Load each served model off the event loop (a model that fails to load ends the process
    with the reason); False when asked to stop meanwhile."""
    for name in names:
        if stop.is_set():
            return False
        log.info("loading model %s", name)
        await asyncio.to_thread(registry.get, name)
    return not stop.is_set()


async def register_until_done(store: SharedJobStore, settings: Settings) -> None:
    """Register the served models, trying again while the database is away: a worker that never
    registered would never work, however long it lived."""
    while True:
        try:
            await store.register_worker(settings.served_models, settings.jobs.workers)
            return
        except Exception:
            log.exception("could not register this worker; trying again")
            await asyncio.sleep(settings.jobs.heartbeat_seconds)
