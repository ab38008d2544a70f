"""The worker pool with the real recognizer and the real bundled model: failures end jobs, never
the pool; a store that cannot take a result for a while (another process's lock, a full disk)
delays it, never loses it; and the pool runs as many jobs at once as it has workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import jiwer
import pytest

from asr_testkit import HoldsResultUntilAllowed
from callpipe_asr.audio import AudioLimits, decode_audio
from callpipe_asr.engines import ModelRegistry
from callpipe_asr.errors import AudioError, StorageFull
from callpipe_asr.jobs import Job, JobRequest, JobStatus
from callpipe_asr.jobs.events import JobEvents
from callpipe_asr.jobs.sqlite_store import SQLiteJobStore
from callpipe_asr.jobs.workers import WorkerPool
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.settings import Settings
from callpipe_asr.transcript import RecognitionOptions, Transcript

POLL_SECONDS = 0.05


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("'", "")).split())


def assert_sensible(job: Job, reference: str, max_wer: float = 0.35) -> None:
    assert job.status is JobStatus.DONE, (job.error_code, job.error)
    assert job.transcript is not None
    wer = jiwer.wer(words(reference), words(job.transcript.text) or "<empty>")
    assert wer <= max_wer, f"WER {wer:.2f}: {job.transcript.text!r} for {reference!r}"


def wav_with_garbage(seed: int = 7) -> bytes:
    """A well-formed RIFF/WAVE header declaring MP3 data, followed by bytes that are no MP3."""
    junk = random.Random(seed).randbytes(4000)
    fmt = struct.pack("<HHIIHH", 0x55, 1, 8000, 1000, 1, 0)
    fmt += struct.pack("<HHIHHH", 12, 1, 2, 144, 1, 1393)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(junk)) + junk
    return b"RIFF" + struct.pack("<I", len(body)) + body


class Pool:
    """A started :class:`WorkerPool` on a store, and how to hand it work."""

    def __init__(self, store: SQLiteJobStore, pool: WorkerPool, events: JobEvents) -> None:
        self.store = store
        self.pool = pool
        self.events = events

    async def submit(self, audio: bytes) -> str:
        """Straight into the store (no HTTP probe), as an accepted request would be."""
        job, created = await self.store.submit(JobRequest(audio=audio, options=RecognitionOptions()))
        assert created
        self.events.work_added()
        return job.id


StartPool = Callable[..., Awaitable[Pool]]


@pytest.fixture
async def start_pool(
    open_store: Any, model_settings: Settings, registry: ModelRegistry
) -> AsyncIterator[StartPool]:
    """``await start_pool(workers=1, registry=None, store=None, wrap=None, **pool_options)``: a
    running pool with the real recognizer (the shared real model unless a registry is given;
    ``wrap(recognizer)`` may put a stand-in around it); stopped at teardown."""
    pools: list[WorkerPool] = []

    async def start(
        workers: int = 1,
        registry_: Any = None,
        store: SQLiteJobStore | None = None,
        wrap: Callable[[Recognizer], Any] | None = None,
        **pool_options: Any,
    ) -> Pool:
        store = store or await open_store()
        events = JobEvents()
        recognizer = Recognizer(model_settings, registry_ or registry)
        pool = WorkerPool(store, wrap(recognizer) if wrap else recognizer, events, workers, POLL_SECONDS, **pool_options)
        pools.append(pool)
        await pool.start()
        return Pool(store, pool, events)

    yield start
    for pool in pools:
        await pool.stop()


# -- failures end the job, never the pool -------------------------------------------------------------


@pytest.mark.parametrize(
    "audio",
    [b"this is a text file, not a recording " * 20, wav_with_garbage()],
    ids=["not-audio", "wav-header-then-garbage"],
)
async def test_an_undecodable_job_fails_with_the_reason(
    start_pool: StartPool, wait_final: Any, prompt: Any, audio: bytes
) -> None:
    with pytest.raises(AudioError) as decoding:
        decode_audio(audio, None, AudioLimits(3600, 8))
    running = await start_pool(workers=1)
    bad = await running.submit(audio)
    good = await running.submit(prompt.audio)

    failed = await wait_final(running.store, bad)
    assert failed.status is JobStatus.FAILED
    assert failed.error == decoding.value.message, "the decoder's own reason reaches the job"
    assert failed.error_code == decoding.value.code
    assert "audio" in failed.error and failed.transcript is None
    assert failed.attempts == 1 and not failed.has_audio

    assert_sensible(await wait_final(running.store, good), prompt.text)


class FirstCallRaises:
    """Deliberately failing engine stand-in: the real engine, except that its first call raises an
    exception no engine is expected to raise (a bug in a library), so the pool's safety net is hit."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.name = engine.name
        self.calls = 0

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        self.calls += 1
        if self.calls == 1:
            raise IndexError("list index out of range (simulated library bug)")
        transcript: Transcript = self._engine.transcribe(samples, options)
        return transcript

    def close(self) -> None:  # the real engine belongs to the session's registry
        pass


class RegistryOf:
    """A registry that serves one engine for every model name (only for the stand-in above)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def get(self, name: str) -> Any:
        return self._engine

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[Any]:
        yield self._engine


async def test_an_unexpected_engine_error_fails_that_job_and_the_pool_goes_on(
    start_pool: StartPool, wait_final: Any, registry: ModelRegistry, model_settings: Settings, prompts: Any
) -> None:
    engine = FirstCallRaises(registry.get(model_settings.default_model))
    running = await start_pool(workers=1, registry_=RegistryOf(engine))
    first = await running.submit(prompts["agent-alreadyon"].audio)
    second = await running.submit(prompts["conf-onlyperson"].audio)

    failed = await wait_final(running.store, first)
    assert failed.status is JobStatus.FAILED
    assert failed.error_code == "internal_error"
    assert failed.error is not None and "IndexError" in failed.error
    assert "simulated" not in failed.error, "internal details stay in the log"

    assert_sensible(await wait_final(running.store, second), prompts["conf-onlyperson"].text)
    assert engine.calls == 2


class DiskFullOnFirstFinish(SQLiteJobStore):
    """Store stand-in: the real SQLite store, except that writing the first result fails the way a
    full disk does. Without a safety net this ended the worker task and left the job running."""

    finishes = 0

    async def finish(self, job_id: str, token: str, transcript: Transcript) -> bool:
        self.finishes += 1
        if self.finishes == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return await super().finish(job_id, token, transcript)


async def test_a_result_that_cannot_be_stored_fails_the_job_and_the_pool_goes_on(
    start_pool: StartPool, wait_final: Any, make_settings: Callable[..., Settings], prompts: Any
) -> None:
    settings = make_settings()
    store = DiskFullOnFirstFinish(settings.database_path, settings.jobs)
    await store.open()
    running: Pool | None = None
    try:
        running = await start_pool(workers=1, store=store)
        first = await running.submit(prompts["vm-nomore"].audio)
        second = await running.submit(prompts["queue-thankyou"].audio)

        failed = await wait_final(store, first)
        assert failed.status is JobStatus.FAILED and failed.error_code == "internal_error"
        assert_sensible(await wait_final(store, second), prompts["queue-thankyou"].text)
    finally:
        if running is not None:
            await running.pool.stop()
        await store.close()


# -- the store cannot take a result for a while --------------------------------------------------------

BUSY_TIMEOUT_MS = 200
"""The store's SQLite busy timeout in these tests (the server's is 10 s): a lock held longer
makes each write give up with ``StoreBusy`` quickly, so the test sees several tries."""
LOCK_HELD_SECONDS = 2.5
"""Longer than the busy timeout many times over: without retries the result would be lost."""



LOCK_SCRIPT = (
    "import sqlite3, sys\n"
    "connection = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "connection.execute('BEGIN IMMEDIATE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.readline()\n"
    "connection.execute('ROLLBACK')\n"
)


@contextlib.contextmanager
def write_lock_held_by_another_process(database: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the job database's write lock (``BEGIN IMMEDIATE``, as an
    administrator's ``sqlite3`` session or a backup tool would) until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", LOCK_SCRIPT, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            yield holder
        finally:
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(10)


async def _locked_store(open_store: Any) -> SQLiteJobStore:
    store: SQLiteJobStore = await open_store()
    store._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # before any worker uses the connection
    return store


async def _pool_holding_results(
    start_pool: StartPool, store: Any, result_retry_seconds: float
) -> tuple[Any, HoldsResultUntilAllowed]:
    """One worker whose recognizer holds each result until the test's go-ahead."""
    gates: list[HoldsResultUntilAllowed] = []

    def wrap(recognizer: Recognizer) -> HoldsResultUntilAllowed:
        gates.append(HoldsResultUntilAllowed(recognizer))
        return gates[-1]

    running = await start_pool(workers=1, store=store, wrap=wrap, result_retry_seconds=result_retry_seconds)
    assert len(gates) == 1
    return running, gates[0]


async def test_a_lock_held_past_the_busy_timeout_as_a_job_ends_delays_its_result_but_never_loses_it(
    start_pool: StartPool, open_store: Any, wait_final: Any, prompt: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the finish gave up after the busy timeout, the transcript was thrown away and the
    job stayed ``running`` until the next start."""
    store = await _locked_store(open_store)
    running, gate = await _pool_holding_results(start_pool, store, result_retry_seconds=60)
    job_id = await running.submit(prompt.audio)
    assert await asyncio.to_thread(gate.recognised.wait, 120), "the job was never recognised"
    with caplog.at_level(logging.WARNING, logger="callpipe_asr.jobs.workers"):
        with write_lock_held_by_another_process(store._path):
            gate.go_ahead.set()
            await asyncio.sleep(LOCK_HELD_SECONDS)
            held = await store.get(job_id)  # reads go on under the lock (WAL)
            assert held is not None and held.status is JobStatus.RUNNING and held.error is None
            retries = [r for r in caplog.records if "could not store its outcome" in r.getMessage()]
            assert len(retries) >= 2, "the result was not tried again while the lock was held"
        done = await wait_final(store, job_id, timeout=30)
    assert_sensible(done, prompt.text)
    assert done.attempts == 1, "stored, not recognised again"
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


async def test_a_lock_held_past_the_retry_time_leaves_the_job_for_the_recovery_and_says_so(
    start_pool: StartPool, open_store: Any, wait_final: Any, prompts: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the result nor a failure can be written while the lock lasts: the job stays
    ``running`` (with an error line saying why and what happens next), the worker goes on, and
    the recovery of the next start runs the job again."""
    store = await _locked_store(open_store)
    running, gate = await _pool_holding_results(start_pool, store, result_retry_seconds=1.0)
    job_id = await running.submit(prompts["agent-alreadyon"].audio)
    assert await asyncio.to_thread(gate.recognised.wait, 120)
    with caplog.at_level(logging.WARNING, logger="callpipe_asr.jobs.workers"):
        with write_lock_held_by_another_process(store._path):
            gate.go_ahead.set()
            deadline = time.monotonic() + 30
            while not any("stays running" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the worker never gave up"
                await asyncio.sleep(0.05)
    left = await store.get(job_id)
    assert left is not None and left.status is JobStatus.RUNNING and left.has_audio

    other = await running.submit(prompts["conf-onlyperson"].audio)
    assert_sensible(await wait_final(store, other), prompts["conf-onlyperson"].text)  # the worker goes on
    assert await store.recover() == (1, 0)  # what the next start does
    running.events.work_added()
    again = await wait_final(store, job_id)
    assert_sensible(again, prompts["agent-alreadyon"].text)
    assert again.attempts == 2


class DiskFullOnEveryFinish(SQLiteJobStore):
    """Store stand-in: the real SQLite store, except that no result can be written, the way a
    disk too full for a transcript is (a short failure still fits)."""

    finishes = 0

    async def finish(self, job_id: str, token: str, transcript: Transcript) -> bool:
        self.finishes += 1
        raise StorageFull("the server's disk is full; nothing was stored (free space in the data directory)")


async def test_a_result_that_stays_unstorable_past_the_retry_time_fails_the_job_with_the_reason(
    start_pool: StartPool, wait_final: Any, make_settings: Callable[..., Settings], prompts: Any
) -> None:
    settings = make_settings()
    store = DiskFullOnEveryFinish(settings.database_path, settings.jobs)
    await store.open()
    running: Pool | None = None
    try:
        running = await start_pool(workers=1, store=store, result_retry_seconds=1.0)
        job_id = await running.submit(prompts["vm-nomore"].audio)
        failed = await wait_final(store, job_id)
        assert failed.status is JobStatus.FAILED and failed.error_code == "result_not_stored"
        assert failed.error is not None and "could not be stored" in failed.error and "disk is full" in failed.error
        assert store.finishes >= 2, "tried again before giving up"
        assert not failed.has_audio
    finally:
        if running is not None:
            await running.pool.stop()
        await store.close()


# -- concurrency ---------------------------------------------------------------------------------------

CONCURRENT_PROMPTS = ("conf-getpin", "vm-tocallback", "pbx-invalid", "agent-loginok")


def most_at_once(jobs: list[Job]) -> int:
    """The largest number of jobs whose [started, finished] intervals overlap."""
    edges = sorted([(j.started_at, 1) for j in jobs] + [(j.finished_at, -1) for j in jobs])  # type: ignore[list-item]
    current = peak = 0
    for _, step in edges:  # at equal times the end (-1) sorts first
        current += step
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize("workers", [1, 2])
async def test_jobs_run_concurrently_up_to_the_number_of_workers(
    start_pool: StartPool, wait_final: Any, prompts: Any, workers: int
) -> None:
    names = CONCURRENT_PROMPTS[: 2 * workers]
    running = await start_pool(workers=workers)
    ids = [await running.submit(prompts[name].audio) for name in names]

    peak_running = 0
    deadline = time.monotonic() + 120
    while True:
        stats = await running.store.stats()
        peak_running = max(peak_running, stats.running)
        if stats.active == 0:
            break
        assert time.monotonic() < deadline, "the jobs did not finish"
        await asyncio.sleep(0.01)

    jobs = [await wait_final(running.store, job_id) for job_id in ids]
    for job, name in zip(jobs, names):
        assert_sensible(job, prompts[name].text)
        assert job.attempts == 1
    assert peak_running == workers
    assert most_at_once(jobs) == workers


# -- clean shutdown --------------------------------------------------------------------------------------


async def test_stopping_the_pool_hands_a_running_job_back_uncounted(
    start_pool: StartPool, wait_final: Any, prompts: Any, open_store: Any
) -> None:
    running = await start_pool(workers=1)
    job_id = await running.submit(prompts["conf-onlyperson"].audio)
    deadline = time.monotonic() + 30
    while (await running.store.get(job_id)).status is not JobStatus.RUNNING:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await running.pool.stop()

    released = await running.store.get(job_id)
    assert released is not None
    assert released.status is JobStatus.QUEUED and released.attempts == 0 and released.has_audio

    again = await start_pool(workers=1, store=running.store)
    assert_sensible(await wait_final(again.store, job_id), prompts["conf-onlyperson"].text)
    assert (await again.store.get(job_id)).attempts == 1  # type: ignore[union-attr]


def test_the_garbage_wav_is_well_formed_riff() -> None:
    """The header of :func:`wav_with_garbage` is valid: only its payload is undecodable."""
    data = wav_with_garbage()
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
