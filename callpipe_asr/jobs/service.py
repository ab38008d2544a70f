"""The job service: what every dialect calls to submit work, wait for it and read it back.

It checks the audio before a job is accepted (format, channels, duration: a bad upload is the
client's 4xx at once, not a failed job later), writes the job, wakes a worker, and lets
synchronous requests wait for the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor

from ..audio import AudioInfo, AudioLimits, probe_audio
from ..engines import resolve_model_name
from ..errors import NotFound, WaitTimeout
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

    def close(self) -> None:
        self._probe_executor.shutdown(wait=True, cancel_futures=True)

    async def probe(self, request: JobRequest) -> AudioInfo:
        return await asyncio.get_running_loop().run_in_executor(
            self._probe_executor, probe_audio, request.audio, request.hints, self._limits
        )

    async def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Check the audio, then store the job durably; return it and whether it is new."""
        resolve_model_name(request.options.model, self._settings)  # unknown names fail now in strict mode
        info = await self.probe(request)
        request = dataclasses.replace(request, audio_duration=info.duration, content_type=MIME_TYPES.get(info.format))
        job, created = await self._store.submit(request)
        if created:
            self._events.work_added()
        return job, created

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
