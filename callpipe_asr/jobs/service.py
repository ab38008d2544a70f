"""The job service: what every dialect calls to submit work, wait for it and read it back.

It checks the audio before a job is accepted (format, channels, duration: a bad upload is the
client's 4xx at once, not a failed job later), writes the job, wakes a worker, and lets
synchronous requests wait for the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, runtime_checkable

from .. import logs
from ..access import KeyPolicy, policies_by_owner
from ..audio import AudioInfo, AudioLimits, probe_audio
from ..engines import ModelRequest, select_model
from ..engines.sources import installed_models
from ..errors import NotFound, ShuttingDown, TooManyJobs, WaitTimeout
from ..settings import Settings
from .events import JobEvents
from .model import Job, JobRequest, QueueStats
from .store import JobStore

PROBE_THREADS = 2
MIME_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "matroska,webm": "audio/webm",
    "mov,mp4,m4a,3gp,3g2,mj2": "audio/mp4",
}
"""FFmpeg container names -> the type a browser's audio player accepts."""
DEFAULT_RETRY_AFTER_SECONDS = 10

log = logging.getLogger(__name__)


@runtime_checkable
class QueueInsight(Protocol):
    """What a store may also answer: per-key job counts (``max_concurrent_jobs``) and the age
    of the queue (the metrics). A store without it serves jobs as before; the service then
    cannot enforce concurrent-job limits and says so at start."""

    async def count_active(self, owner: str | None) -> int: ...
    async def oldest_queued_at(self) -> float | None: ...


@dataclasses.dataclass(frozen=True)
class JobProgress:
    """Where a job stands, for pages and the native API."""

    job: Job
    queue_position: int | None
    """1 = next to run; None unless queued."""
    estimated_seconds: float | None
    """Seconds until the job should be done, from recent processing times; None when unknown or done."""


class JobService:
    def __init__(self, settings: Settings, store: JobStore, events: JobEvents) -> None:
        self._settings = settings
        self._store = store
        self._events = events
        self._limits = AudioLimits(settings.audio.max_duration_seconds, settings.audio.max_channels)
        self._probe_executor = ThreadPoolExecutor(max_workers=PROBE_THREADS, thread_name_prefix="probe")
        self._policies = policies_by_owner(settings.auth)
        self._installed = installed_models(settings)
        self._draining = False
        self._waits_ended = False
        if any(p.max_concurrent_jobs for p in self._policies.values()) and not isinstance(store, QueueInsight):
            log.warning("this job store cannot count a key's jobs: max_concurrent_jobs is not enforced")

    @property
    def draining(self) -> bool:
        """Whether the server is stopping: no new work is taken."""
        return self._draining

    def start_draining(self) -> None:
        """Refuse new work from now on (503, each dialect's own); running jobs go on."""
        self._draining = True

    def end_waits(self) -> None:
        """Answer requests still waiting for a job (it goes on after a restart) instead of
        letting the shutdown cut their connections."""
        self._waits_ended = True

    def close(self) -> None:
        self._probe_executor.shutdown(wait=True, cancel_futures=True)

    async def probe(self, request: JobRequest) -> AudioInfo:
        return await asyncio.get_running_loop().run_in_executor(
            self._probe_executor, probe_audio, request.audio, request.hints, self._limits
        )

    async def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Check the audio, then store the job durably; return it and whether it is new.

        The key's defaults fill what the request left open, and its concurrent-job limit is
        checked once the job is stored: a retry of a request whose job exists attaches to it
        (never refused), and a new job over the limit is taken back at once.
        """
        if self._draining:
            raise ShuttingDown("the server is shutting down; retry shortly")
        policy = self._policies.get(request.owner) if request.owner else None
        if policy is not None:
            request = dataclasses.replace(request, options=policy.with_defaults(request.options, self._settings))
        request = self._with_model(request)  # an unknown name (strict) or unserved language fails now
        info = await self.probe(request)
        request = dataclasses.replace(request, audio_duration=info.duration, content_type=MIME_TYPES.get(info.format))
        job, created = await self._store.submit(request)
        if created:
            if policy is not None and policy.max_concurrent_jobs:
                await self._refuse_over_limit(job, policy)
            with logs.bound(job_id=job.id):
                log.info("job accepted: %s, %.1f s of audio", job.dialect, info.duration)
            self._events.work_added()
        return job, created

    def _with_model(self, request: JobRequest) -> JobRequest:
        """``request`` with the configured model that will run it in place of the name the
        client sent: the job stores the model it runs on (a worker, or another machine's worker,
        runs exactly that), and a request no model can serve is refused before its audio is
        probed (see :func:`..engines.select_model`)."""
        model = select_model(ModelRequest.of(request.options), self._settings, self._installed)
        if model == request.options.model:
            return request
        return dataclasses.replace(request, options=dataclasses.replace(request.options, model=model))

    async def _refuse_over_limit(self, job: Job, policy: KeyPolicy) -> None:
        active = await self.active_count(policy.owner)
        if active is None or active <= policy.max_concurrent_jobs:
            return
        await self._store.delete(job.id)
        log.info("refused a job: the key %s has %d jobs queued or running", policy.name, active - 1)
        stats = await self._store.stats()
        retry = math.ceil(stats.average_processing_seconds or DEFAULT_RETRY_AFTER_SECONDS)
        raise TooManyJobs(
            f"this API key already has {policy.max_concurrent_jobs} jobs queued or running", max(1, retry)
        )

    async def active_count(self, owner: str | None) -> int | None:
        """Jobs of ``owner`` queued or running; None when the store cannot tell."""
        if isinstance(self._store, QueueInsight):
            return await self._store.count_active(owner)
        return None

    async def oldest_queued_age(self) -> float | None:
        """Seconds the oldest queued job has waited; 0 with none queued; None when the store
        cannot tell."""
        if not isinstance(self._store, QueueInsight):
            return None
        oldest = await self._store.oldest_queued_at()
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    async def get(self, job_id: str) -> Job:
        job = await self._store.get(job_id)
        if job is None:
            raise NotFound(f"no job with id '{job_id}' (it may have expired)")
        return job

    async def wait(self, job_id: str, timeout_seconds: float) -> Job:
        """The job once it has ended, or :class:`WaitTimeout` (the job goes on)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            job = await self.get(job_id)
            if job.status.is_final:
                return job
            if self._waits_ended:
                raise ShuttingDown(f"the server is shutting down; job {job_id} goes on after the restart")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status.value} after {timeout_seconds:.0f} s; it goes on")
            await self._events.wait_for_job(job_id, min(remaining, self._settings.jobs.poll_interval_seconds))

    async def progress(self, job: Job) -> JobProgress:
        if job.status.is_final:
            return JobProgress(job, None, None)
        position = await self._store.queue_position(job.id)
        stats = await self._store.stats()
        return JobProgress(job, position, _estimate(job, position, stats, self._settings.jobs.workers))

    async def store_reachable(self) -> bool:
        return await self._store.ping()

    async def audio(self, job_id: str) -> bytes | None:
        return await self._store.audio(job_id)

    async def delete(self, job_id: str) -> None:
        if not await self._store.delete(job_id):
            raise NotFound(f"no job with id '{job_id}' (it may have expired)")

    async def stats(self) -> QueueStats:
        return await self._store.stats()

    async def list_jobs(self, owner: str | None, dialect: str, limit: int = 100) -> list[Job]:
        return await self._store.list_jobs(owner, dialect, limit)


def _estimate(job: Job, position: int | None, stats: QueueStats, workers: int) -> float | None:
    average = stats.average_processing_seconds
    if average is None:
        return None
    if position is None:  # running
        elapsed = time.time() - (job.started_at or time.time())
        return max(1.0, average - elapsed)
    rounds = math.ceil(position / max(1, workers))
    return max(1.0, rounds * average)
