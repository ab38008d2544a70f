"""The worker pool with the real recognizer and the real bundled model: failures end jobs, never
the pool, and the pool runs as many jobs at once as it has workers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import sqlite3
import struct
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import jiwer
import pytest

from callpipe_asr.audio import AudioLimits, decode_audio
from callpipe_asr.engines import ModelRegistry
from callpipe_asr.errors import AudioError
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
    """``await start_pool(workers=1, registry=None, store=None)``: a running pool with the real
    recognizer (the shared real model unless a registry is given); stopped at teardown."""
    pools: list[WorkerPool] = []

    async def start(workers: int = 1, registry_: Any = None, store: SQLiteJobStore | None = None) -> Pool:
        store = store or await open_store()
        events = JobEvents()
        recognizer = Recognizer(model_settings, registry_ or registry)
        pool = WorkerPool(store, recognizer, events, workers, POLL_SECONDS)
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
