"""The worker pool: claims jobs, runs recognition off the event loop, stores results.

``workers`` asyncio tasks share one thread pool of the same size, so at most that many
recognitions run at once and the event loop stays free for health checks and pages. An error in
one job ends that job as failed; it never ends the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from .. import logs
from ..aio import cancel_and_wait
from ..errors import CallpipeError, StorageFull, StoreBusy, StoreUnavailable
from ..pipeline import Recognizer
from ..transcript import Transcript
from .events import JobEvents
from .model import ClaimedJob, Job, JobStatus
from .store import JobStore

log = logging.getLogger(__name__)

TRANSIENT_STORE_ERRORS = (StoreBusy, StorageFull, StoreUnavailable)
"""What a store raises when it cannot take a write for now (another process's lock, a full disk,
PostgreSQL stopped or restarting) and nothing was changed: storing a job's outcome, and claiming
the next job, are tried again after these, never after a bug."""
CLAIM_RETRY_MAX_DELAY_SECONDS = 30.0
"""An idle worker whose claims meet a store that cannot answer waits longer after each failure,
from ``poll_interval_seconds`` up to this (the store has already retried each claim itself)."""
RESULT_RETRY_FIRST_DELAY_SECONDS = 0.5
RESULT_RETRY_MAX_DELAY_SECONDS = 10.0
"""Pauses between tries to store an outcome double from the first up to this."""
DEFAULT_RESULT_RETRY_SECONDS = 600.0
"""``jobs.result_retry_seconds``'s default, for pools built without settings."""


class JobObserver(Protocol):
    """Told how each job this pool runs ends (the metrics); never raises into the pool."""

    def job_ended(self, job: Job, status: JobStatus, wall_seconds: float, transcript: Transcript | None) -> None: ...


class WorkerPool:
    def __init__(
        self,
        store: JobStore,
        recognizer: Recognizer,
        events: JobEvents,
        workers: int,
        poll_interval_seconds: float,
        observer: JobObserver | None = None,
        result_retry_seconds: float = DEFAULT_RESULT_RETRY_SECONDS,
    ) -> None:
        self._store = store
        self._recognizer = recognizer
        self._events = events
        self._size = workers
        self._poll = poll_interval_seconds
        self._observer = observer
        self._result_retry_seconds = result_retry_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recognizer")
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._draining = False
        self._abandoning = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def busy(self) -> int:
        """Workers recognising a job right now."""
        return self._busy

    async def drain(self, timeout_seconds: float) -> bool:
        """Stop claiming jobs and give the running ones up to ``timeout_seconds`` to finish;
        True when none is left running. :meth:`stop` hands back whatever still runs."""
        self._draining = True
        self._events.work_added()  # wake idle workers so they see it now, not at their next poll
        running = [task for task in self._tasks if not task.done()]
        if not running:
            return True
        _, pending = await asyncio.wait(running, timeout=timeout_seconds)
        # A recognition cannot be interrupted: past the grace period its thread is left to the
        # process's exit instead of holding up the stop (its job goes back to the queue).
        self._abandoning = bool(pending)
        return not pending

    @property
    def abandons_threads(self) -> bool:
        """Whether a drain gave up on running recognitions: :meth:`stop` then hands their jobs
        back without waiting for their threads, and the process should exit without joining them."""
        return self._abandoning

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(index), name=f"worker-{index}") for index in range(self._size)]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        self._executor.shutdown(wait=not self._abandoning, cancel_futures=True)

    async def _work(self, index: int) -> None:
        failures = 0
        while not self._draining:
            try:
                claimed = await self._claim()
            except Exception as exc:  # the store may be unavailable for a while; keep the worker alive
                failures += 1
                delay = min(CLAIM_RETRY_MAX_DELAY_SECONDS, self._poll * 2 ** (failures - 1))
                if isinstance(exc, TRANSIENT_STORE_ERRORS):
                    log.warning("worker %d could not claim a job (%s); trying again in %.1f s", index, exc.message, delay)
                else:
                    log.exception("worker %d could not claim a job; trying again in %.1f s", index, delay)
                # A wake-up (the store's connection back, a drain) ends the pause early.
                await self._events.wait_for_work(delay)
                continue
            if failures:
                log.info("worker %d claims jobs again after %d failed tries", index, failures)
                failures = 0
            if claimed is None:
                await self._events.wait_for_work(self._poll)
                continue
            try:
                with logs.bound(job_id=claimed.job.id):
                    await self._process(claimed)
            except Exception:  # storing the outcome failed (a result the store cannot take): the worker lives on
                log.exception("worker %d could not store the outcome of job %s", index, claimed.job.id)
                with contextlib.suppress(Exception):
                    await self._store.fail(
                        claimed.job.id, claimed.token, "internal error while storing the result", "internal_error"
                    )

    async def _claim(self) -> ClaimedJob | None:
        """Claim a job; if shutdown interrupts the claim, hand back whatever it took.

        The claim itself runs on the store's thread and completes regardless of cancellation, so
        without this a job claimed at the moment of shutdown would stay ``running`` with an
        attempt counted, and the next start would take it for a crash.
        """
        claim = asyncio.ensure_future(self._store.claim())
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                late = await claim
                if late is not None:
                    await self._store.release(late.job.id, late.token)
            raise

    async def _process(self, claimed: ClaimedJob) -> None:
        job = claimed.job
        started = time.perf_counter()
        self._busy += 1
        # The recognition's own log lines (in the executor's thread) carry the job id too.
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, context.run, self._recognizer.recognize, claimed.audio, job.hints, job.options, job.id
        )
        outcome: tuple[JobStatus, Transcript | None] | None = None
        try:
            transcript = await asyncio.shield(future)
        except asyncio.CancelledError:
            # Shutting down: hand the job back untouched; the next start runs it again.
            await self._store.release(job.id, claimed.token)
            raise
        except CallpipeError as exc:
            log.info("job %s failed: %s", job.id, exc.message)
            ended = await self._end(claimed, None, exc.message, exc.code)
            outcome = None if ended is None else (ended, None)
        except Exception as exc:  # a bug or a library error: the job fails, the worker lives on
            log.exception("job %s failed unexpectedly", job.id)
            ended = await self._end(claimed, None, f"internal error while recognising: {type(exc).__name__}", "internal_error")
            outcome = None if ended is None else (ended, None)
        else:
            ended = await self._end(claimed, transcript)
            outcome = None if ended is None else (ended, transcript if ended is JobStatus.DONE else None)
        finally:
            self._busy -= 1
            self._events.job_ended(job.id)
            if outcome is not None:
                self._observe(job, outcome[0], time.perf_counter() - started, outcome[1])

    async def _end(
        self, claimed: ClaimedJob, transcript: Transcript | None, reason: str = "", code: str = ""
    ) -> JobStatus | None:
        """Store how a job ended (its transcript, else the failure ``reason`` and ``code``) and
        return the state it ended in; None when nothing could be stored and it stays ``running``.

        Why the retries: a write can meet the store unable to take it for a while (the SQLite
        file locked by another process past its busy timeout, a full disk, PostgreSQL stopped or
        restarting for longer than the store's own retries). Giving up at once
        would throw the recognised text away and leave the job ``running`` until the next start
        (SQLite recovers only then). So the write is tried again, with growing pauses, for up to
        ``result_retry_seconds``. Past that a result is replaced by a failure naming the reason,
        which needs less room; if even that cannot be written the job is left ``running`` for
        the recovery (the next start; on PostgreSQL, when its lease runs out), and the log says so.
        A claim no longer held (the job deleted or re-claimed meanwhile) is not an error: the
        outcome is discarded, as the fencing wants.
        """
        job = claimed.job
        try:
            stored = await self._store_with_retries(claimed, transcript, reason, code)
        except TRANSIENT_STORE_ERRORS as exc:
            if transcript is None:
                log.error(
                    "job %s: its failure could not be stored for %.0f s (%s); it stays running until the job "
                    "store's recovery runs it again (the next start; PostgreSQL: when its lease runs out)",
                    job.id, self._result_retry_seconds, exc.message,
                )
                return None
            log.error("job %s: its result could not be stored for %.0f s (%s); the job is failed instead",
                      job.id, self._result_retry_seconds, exc.message)
            reason = f"the result could not be stored: {exc.message}"
            try:
                stored = await self._store.fail(job.id, claimed.token, reason, "result_not_stored")
            except TRANSIENT_STORE_ERRORS:
                log.error(
                    "job %s: its failure could not be stored either; it stays running until the job store's "
                    "recovery runs it again (the next start; PostgreSQL: when its lease runs out)", job.id,
                )
                return None
            transcript = None
        except asyncio.CancelledError:
            log.warning("job %s: stopped before its outcome could be stored; the job store's recovery runs it again", job.id)
            raise
        if not stored:
            log.info("job %s was deleted or taken over while it ran; its outcome is discarded", job.id)
        return JobStatus.DONE if transcript is not None else JobStatus.FAILED

    async def _store_with_retries(
        self, claimed: ClaimedJob, transcript: Transcript | None, reason: str, code: str
    ) -> bool:
        """One outcome write, tried again after :data:`TRANSIENT_STORE_ERRORS` until
        ``result_retry_seconds`` have passed (then the last error is raised)."""
        job, token = claimed.job, claimed.token
        deadline = time.monotonic() + self._result_retry_seconds
        delay = RESULT_RETRY_FIRST_DELAY_SECONDS
        while True:
            try:
                if transcript is not None:
                    return await self._store.finish(job.id, token, transcript)
                return await self._store.fail(job.id, token, reason, code)
            except TRANSIENT_STORE_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("job %s: could not store its outcome (%s); trying again in %.1f s", job.id, exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(RESULT_RETRY_MAX_DELAY_SECONDS, delay * 2)

    def _observe(self, job: Job, status: JobStatus, wall_seconds: float, transcript: Transcript | None) -> None:
        if self._observer is None:
            return
        try:
            self._observer.job_ended(job, status, wall_seconds, transcript)
        except Exception:  # metrics must never fail a job
            log.exception("could not record the metrics of job %s", job.id)
