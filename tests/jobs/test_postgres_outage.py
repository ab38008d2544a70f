"""PostgreSQL away (stopped, restarting for longer than the store's retries) while an API server
and a worker pool are up, against a real PostgreSQL cluster of this module's own (stopped with
``pg_ctl stop -m fast`` and started again, so no other test's database goes away).

Before: psycopg's ``OperationalError`` went through the store, every client got a 500, and a
worker holding a finished transcript failed the job (or lost it) instead of waiting. Now a client
gets its dialect's own 503 with ``Retry-After``; the worker keeps its text and stores it once the
database is back, idle workers keep trying to claim with growing pauses, and every job ends once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Callable, Iterator

import aiohttp
import jiwer
import psycopg
import pytest
from aiohttp.test_utils import TestClient

from callpipe_asr.engines import ModelRegistry
from callpipe_asr.jobs.events import JobEvents
from callpipe_asr.jobs.postgres_store import PostgresJobStore
from callpipe_asr.jobs.workers import WorkerPool
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.settings import Settings
from callpipe_asr.web.app import create_app
from asr_testkit import HoldsResultUntilAllowed
from pg_server import ENDINGS_AUDIT, PostgresServer, running_server

LEASE_SECONDS = 5.0
"""Also how long each store operation retries before it answers 503: short, for a quick test."""
POLL_SECONDS = 0.2


@pytest.fixture(scope="module")
def stoppable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for this module alone: its tests stop it."""
    with running_server() as server:
        yield server


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("'", "")).split())


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` straight against the database (past the store); its rows, if any."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(sql)  # type: ignore[call-overload]
        return cursor.fetchall() if cursor.description else []  # type: ignore[no-any-return]



def native_upload(audio: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", audio, filename="voicemail.wav", content_type="audio/wav")
    return form


def openai_upload(audio: bytes) -> aiohttp.FormData:
    form = native_upload(audio)
    form.add_field("model", "whisper-1")
    return form


async def until_final(client: TestClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = await client.get(f"/api/v1/jobs/{job_id}")
        assert answer.status == 200, (answer.status, await answer.text())
        job: dict[str, Any] = await answer.json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout:.0f} s"
        await asyncio.sleep(POLL_SECONDS)


async def test_postgresql_down_answers_each_dialects_503_and_no_work_is_lost_or_done_twice(
    stoppable_postgres: PostgresServer,
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    model_settings: Settings,
    registry: ModelRegistry,
    prompts: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = stoppable_postgres.fresh_database()
    settings = make_settings(
        jobs__store=dsn, jobs__lease_seconds=LEASE_SECONDS, jobs__heartbeat_seconds=1,
        jobs__poll_interval_seconds=POLL_SECONDS, jobs__unserved_model_wait_seconds=0,
    )
    # The API process (serve --role api): answers clients, runs no recognition.
    api: TestClient = await aiohttp_client(create_app(settings, run_workers=False))
    assert (await api.get("/readyz")).status == 200
    await asyncio.to_thread(rows, dsn, ENDINGS_AUDIT)

    # A worker process's pool, on its own store, as `callpipe-asr worker` runs it: two workers, so
    # one is idle (claiming) while the other holds a finished transcript through the outage.
    worker_store = PostgresJobStore(settings)
    await worker_store.open()
    events = JobEvents()
    await worker_store.start_background(events)
    await worker_store.register_worker(["tiny.en"], 2)
    gate = HoldsResultUntilAllowed(Recognizer(model_settings, registry))
    pool = WorkerPool(worker_store, gate, events, 2, POLL_SECONDS, result_retry_seconds=120)  # type: ignore[arg-type]
    await pool.start()
    try:
        before = prompts["agent-alreadyon"]
        accepted = await api.post("/api/v1/jobs", data=native_upload(before.audio))
        assert accepted.status == 202, await accepted.text()
        queued_id = (await accepted.json())["id"]
        assert await asyncio.to_thread(gate.recognised.wait, 120), "the job was never recognised"

        with caplog.at_level(logging.INFO):
            await asyncio.to_thread(stoppable_postgres.halt)
            gate.go_ahead.set()  # its result now meets the database away

            native, openai, status = await asyncio.gather(
                api.post("/api/v1/jobs", data=native_upload(prompts["conf-onlyperson"].audio)),
                api.post("/v1/audio/transcriptions", data=openai_upload(prompts["vm-tocallback"].audio)),
                api.get(f"/api/v1/jobs/{queued_id}"),
            )
            assert native.status == 503, await native.text()
            assert native.headers["Retry-After"].isdigit() and int(native.headers["Retry-After"]) >= 1
            error = (await native.json())["error"]
            assert set(error) == {"code", "message", "status"}
            assert error["code"] == "store_unavailable" and error["status"] == 503
            assert "psycopg" not in error["message"] and "127.0.0.1" not in error["message"], "no internals"

            assert openai.status == 503, await openai.text()
            assert int(openai.headers["Retry-After"]) >= 1
            envelope = (await openai.json())["error"]
            assert set(envelope) == {"message", "type", "param", "code"}
            assert envelope["type"] == "server_error" and envelope["code"] == "store_unavailable"
            assert "x-should-retry" not in openai.headers, "the SDK retries a 503 after Retry-After"

            assert status.status == 503 and (await status.json())["error"]["code"] == "store_unavailable"
            assert (await api.get("/healthz")).status == 200, "the process itself answers"
            assert (await api.get("/readyz")).status == 503
            scrape = await api.get("/metrics")
            assert scrape.status == 200 and "callpipe_asr_store_up 0.0" in await scrape.text()

            assert all(not task.done() for task in pool._tasks), "every worker lives through the outage"
            messages = [record.getMessage() for record in caplog.records]
            assert any("could not store its outcome" in m for m in messages), "the result is being retried"
            assert any("could not claim a job" in m for m in messages), "the idle worker keeps trying"

            # FusionPBX mails whatever a failed /transcribe answers: it waits for the store instead
            fusionpbx_form = aiohttp.FormData()
            fusionpbx_form.add_field("file", prompts["vm-tocallback"].audio, filename="msg.wav", content_type="audio/wav")
            fusionpbx_form.add_field("model", "whisper-1")
            fusionpbx = asyncio.create_task(api.post("/transcribe", data=fusionpbx_form))
            await asyncio.sleep(LEASE_SECONDS + 1)
            assert not fusionpbx.done(), "FusionPBX's upload was refused while the database was away"

            await asyncio.to_thread(stoppable_postgres.start)
            waited = await fusionpbx
            assert waited.status == 200, await waited.text()
            assert jiwer.wer(words(prompts["vm-tocallback"].text), words(await waited.text())) <= 0.35
            after = await api.post("/api/v1/jobs", data=native_upload(prompts["conf-onlyperson"].audio))
            assert after.status == 202, await after.text()
            after_id = (await after.json())["id"]

            finished = await until_final(api, queued_id)
            assert finished["status"] == "done", finished
            assert finished["attempts"] == 1, "its text was stored once the database was back, not recognised again"
            assert jiwer.wer(words(before.text), words(finished["transcript"]["text"])) <= 0.35
            assert (await until_final(api, after_id))["status"] == "done", "the pool works on after the outage"
        unhandled = [r.getMessage() for r in caplog.records if "unhandled error" in r.getMessage()]
        assert not unhandled, "a 500: an exception reached the last-resort handler"
    finally:
        gate.go_ahead.set()
        await pool.stop()
        await worker_store.close()

    endings = await asyncio.to_thread(rows, dsn, "SELECT job_id, COUNT(*) FROM endings GROUP BY job_id")
    ended = dict(endings)
    assert set(ended.values()) == {1} and len(ended) == 3, "each job ended exactly once, none extra"
    assert {queued_id, after_id} <= set(ended), ended
