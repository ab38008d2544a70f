"""Prometheus metrics: every metric defined once, in one registry the app owns.

No global registry: each app (a test's too) has its own :class:`Metrics`, so nothing leaks
between apps and the process-wide defaults (which would mix in whatever else is imported) stay
out. Labels are few and bounded: the dialect (a route module's name, never a path with an id),
a status class, a key's configured name, a job's final state, a configured model's name.

Queue gauges are read from the store when Prometheus scrapes, so they are right whichever
process (an API process, a worker, the admin CLI) changed the queue.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import __version__
from .engines import ModelRegistry, resolve_model_name
from .engines.base import Engine
from .errors import CallpipeError
from .jobs import Job, JobService, JobStatus, QueueStats
from .settings import Settings
from .transcript import Transcript

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4800)
"""Seconds: from a health check to FusionPBX's synchronous wait (its curl gives up at 4500 s)."""
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
"""Recognition wall time per second of audio; above 1 the queue grows while calls keep coming."""
STORE_SCRAPE_TIMEOUT_SECONDS = 3.0
"""Seconds a scrape waits for the store's queue figures; past it ``store_up`` is 0 and the scrape
answers anyway (a PostgreSQL store that is away retries for ``jobs.lease_seconds``, longer than
Prometheus waits for a scrape, which would then lose this process's other metrics too)."""
NO_KEY = ""
"""The ``key`` label of requests without one (no keys configured, or none presented)."""


class Metrics:
    """The server's metrics and the events that move them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "callpipe_asr_http_requests_total", "HTTP requests answered, by dialect, status class and key name.",
            ["dialect", "status_class", "key"], registry=r,
        )
        self.request_seconds = Histogram(
            "callpipe_asr_http_request_duration_seconds", "Time to answer a request (synchronous waits included).",
            ["dialect"], buckets=REQUEST_BUCKETS, registry=r,
        )
        self.access_denied = Counter(
            "callpipe_asr_access_denied_total",
            "Requests refused before any work: missing_key, invalid_key, dialect_not_allowed, rate_limited, "
            "too_many_failures (a client guessing keys).",
            ["reason", "key"], registry=r,
        )
        self.queue_jobs = Gauge("callpipe_asr_queue_jobs", "Jobs queued or running now (read from the store).", ["state"], registry=r)
        self.oldest_queued_age = Gauge(
            "callpipe_asr_queue_oldest_job_age_seconds",
            "Seconds the longest-waiting queued job has waited; 0 with none queued; NaN if the store cannot tell.",
            registry=r,
        )
        self.jobs = Counter(
            "callpipe_asr_jobs_total", "Jobs this process's workers ended, by dialect and final state (done, failed).",
            ["dialect", "state"], registry=r,
        )
        self.audio_seconds = Counter(
            "callpipe_asr_audio_seconds_total", "Seconds of audio recognised, by model.", ["model"], registry=r
        )
        self.real_time_factor = Histogram(
            "callpipe_asr_real_time_factor", "Recognition wall time divided by audio duration, per finished job.",
            ["model"], buckets=RTF_BUCKETS, registry=r,
        )
        self.model_load_seconds = Gauge(
            "callpipe_asr_model_load_seconds", "Seconds the last load of each model took.", ["model"], registry=r
        )
        self.store_up = Gauge(
            "callpipe_asr_store_up", "1 when the job store answered this scrape, else 0 (the queue gauges are NaN).",
            registry=r,
        )
        self.workers = Gauge("callpipe_asr_workers", "Recognition workers in this process.", registry=r)
        self.worker_busy_ratio = Gauge(
            "callpipe_asr_worker_busy_ratio", "Share of this process's workers recognising a job at scrape time.", registry=r
        )
        self.worker_busy_seconds = Counter(
            "callpipe_asr_worker_busy_seconds_total",
            "Worker time spent on jobs; rate() of it over callpipe_asr_workers is the busy ratio over time.",
            registry=r,
        )
        Gauge("callpipe_asr_build_info", "The running version.", ["version"], registry=r).labels(__version__).set(1)

    # -- requests (the middleware) ------------------------------------------------------------

    def request_answered(self, dialect: str, status: int, seconds: float, key: str | None, denial: str | None) -> None:
        self.requests.labels(dialect, f"{status // 100}xx", key or NO_KEY).inc()
        self.request_seconds.labels(dialect).observe(seconds)
        if denial is not None:
            self.access_denied.labels(denial, key or NO_KEY).inc()

    # -- jobs (the workers' observer) ---------------------------------------------------------

    def job_ended(self, job: Job, status: JobStatus, wall_seconds: float, transcript: Transcript | None) -> None:
        self.jobs.labels(job.dialect, status.value).inc()
        self.worker_busy_seconds.inc(wall_seconds)
        if status is not JobStatus.DONE:
            return
        model = self._model_name(job)
        audio = (transcript.duration if transcript is not None else None) or job.audio_duration or 0.0
        if audio > 0:
            self.audio_seconds.labels(model).inc(audio)
            self.real_time_factor.labels(model).observe(wall_seconds / audio)

    def _model_name(self, job: Job) -> str:
        try:
            return resolve_model_name(job.options.model, self._settings)
        except CallpipeError:  # a name the config no longer has (strict mode)
            return "unknown"

    def model_loaded(self, model: str, seconds: float) -> None:
        self.model_load_seconds.labels(model).set(seconds)

    # -- a scrape -----------------------------------------------------------------------------

    async def exposition(self, service: JobService | None, workers: int, busy: int) -> bytes:
        """The text Prometheus reads, with the queue gauges read from the store first."""
        if service is not None:
            await self._read_queue(service)
        self.workers.set(workers)
        self.worker_busy_ratio.set(busy / workers if workers else 0.0)
        return generate_latest(self.registry)


    async def _read_queue(self, service: JobService) -> None:
        async def read() -> tuple[QueueStats, float | None]:
            return await service.stats(), await service.oldest_queued_age()

        try:
            stats, age = await asyncio.wait_for(read(), STORE_SCRAPE_TIMEOUT_SECONDS)
        except Exception:  # a scrape must answer, and say the store did not
            log.warning("the job store did not answer the metrics scrape", exc_info=True)
            self.store_up.set(0)
            for gauge in (self.queue_jobs.labels("queued"), self.queue_jobs.labels("running"), self.oldest_queued_age):
                gauge.set(math.nan)
            return
        self.store_up.set(1)
        self.queue_jobs.labels("queued").set(stats.queued)
        self.queue_jobs.labels("running").set(stats.running)
        self.oldest_queued_age.set(math.nan if age is None else age)


class TimedModelRegistry(ModelRegistry):
    """The model registry, telling the metrics how long each model took to load."""

    def __init__(self, settings: Settings, concurrency: int, metrics: Metrics) -> None:
        super().__init__(settings, concurrency)
        self._metrics = metrics

    def get(self, name: str) -> Engine:
        if self.is_loaded(name):
            return super().get(name)
        started = time.perf_counter()
        engine = super().get(name)
        self._metrics.model_loaded(name, time.perf_counter() - started)
        return engine


__all__ = ["CONTENT_TYPE", "Metrics", "TimedModelRegistry"]
