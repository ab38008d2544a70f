"""What only the PostgreSQL store has, against a real server: several stores stand for several
worker processes on one database. Leases and their expiry, fencing (a stale token never writes:
exactly once), claims filtered by the models a worker registered, jobs no worker can serve,
NOTIFY wake-ups, surviving a server restart, concurrent claims and submits, callbacks leased to
one dispatcher, and versioned migrations."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Callable

import psycopg
import pytest

from callpipe_asr.errors import QueueFull
from callpipe_asr.jobs import JobRequest, JobStatus
from callpipe_asr.jobs.events import JobEvents
from callpipe_asr.jobs.postgres_store import MIGRATIONS, PostgresJobStore, describe_dsn, migrate
from callpipe_asr.jobs.sqlite_store import SchemaTooNew
from callpipe_asr.jobs.store import SharedJobStore, migrate_store, open_store as store_for
from callpipe_asr.settings import ConfigError, Settings
from callpipe_asr.transcript import RecognitionOptions, Segment, Transcript

LEASE = 30.0
TWO_MODELS = {"tiny.en": {}, "large-v3": {}}
"""Two configured model names (nothing is loaded: no worker runs a model here)."""
WAKE_SECONDS = 2.0
"""A notification arrives well within this; the polling fallback is set far longer."""

MakeRequest = Callable[..., JobRequest]


@pytest.fixture
def store_kind() -> str:
    return "postgresql"


def transcript(text: str) -> Transcript:
    return Transcript(segments=(Segment(text=" " + text, start=0.0, end=1.0),), language="en", duration=1.0, model="tiny.en")


async def _model_of(store: Any, table_rows: Any, job_id: str) -> str:
    rows = await table_rows(store, f"SELECT model FROM jobs WHERE id = '{job_id}'")
    return str(rows[0][0])


# -- leases and fencing -----------------------------------------------------------------------------


async def test_an_expired_lease_is_claimed_again_and_the_stale_worker_cannot_write(
    open_store: Any, make_request: MakeRequest, clock: Any, table_rows: Any
) -> None:
    """Worker A stalls (paused, cut off): its lease runs out, B claims the job, and when A comes
    back its result is refused. B's is the one result: exactly once."""
    a = await open_store(clock=clock)
    b = await open_store(clock=clock)
    job, _ = await a.submit(make_request(b"a call"))
    first = await a.claim()
    assert first is not None and first.job.attempts == 1

    clock.advance(LEASE - 1)
    assert await b.claim() is None, "a live lease is never taken"
    clock.advance(2)
    second = await b.claim()
    assert second is not None and second.job.id == job.id and second.job.attempts == 2
    assert second.token != first.token and second.audio == b"a call"

    assert not await a.finish(job.id, first.token, transcript("stale worker"))
    assert not await a.fail(job.id, first.token, "stale failure", "internal_error")
    assert not await a.release(job.id, first.token)
    assert await b.finish(job.id, second.token, transcript("current worker"))
    assert not await b.finish(job.id, second.token, transcript("twice"))
    done = await b.get(job.id)
    assert done is not None and done.status is JobStatus.DONE and done.transcript == transcript("current worker")
    assert await table_rows(b, "SELECT status, claim_token, lease_expires_at FROM jobs") == [("done", None, None)]


async def test_the_heartbeat_keeps_a_claim_and_drops_one_it_lost(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    a = await open_store(clock=clock)
    b = await open_store(clock=clock)
    job, _ = await a.submit(make_request(b"a long call"))
    held = await a.claim()
    assert held is not None
    for _ in range(3):  # three lease lengths, renewed all along
        clock.advance(LEASE - 1)
        assert await a.heartbeat() == 1
        assert await b.claim() is None

    clock.advance(LEASE + 1)  # A stops beating
    taken = await b.claim()
    assert taken is not None and taken.job.id == job.id
    assert await a.heartbeat() == 0, "the lost claim is not renewed"
    assert await b.heartbeat() == 1
    assert not await a.finish(job.id, held.token, transcript("late"))


async def test_concurrent_claims_never_take_the_same_job(open_store: Any, make_request: MakeRequest) -> None:
    """Five workers grab at once (SKIP LOCKED): every job is claimed exactly once."""
    workers = [await open_store() for _ in range(5)]
    ids = {(await workers[0].submit(make_request(f"call {n}".encode())))[0].id for n in range(20)}

    async def drain(store: PostgresJobStore) -> list[str]:
        taken = []
        while (claimed := await store.claim()) is not None:
            taken.append(claimed.job.id)
            assert await store.finish(claimed.job.id, claimed.token, transcript("ok"))
        return taken

    results = await asyncio.gather(*(drain(store) for store in workers))
    claimed = [job_id for taken in results for job_id in taken]
    assert sorted(claimed) == sorted(ids), "each job once, none lost"
    assert sum(1 for taken in results if taken) >= 2, "the work was shared"


async def test_a_poison_job_fails_after_max_attempts_across_workers(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    """Each worker that takes it dies (no heartbeat, no result); the attempts add up across
    workers, and once they are used up the job ends failed instead of killing more workers."""
    stores = [await open_store(clock=clock, jobs__max_attempts=2) for _ in range(3)]
    poison, _ = await stores[0].submit(make_request(b"poison"))
    for store in stores[:2]:
        claimed = await store.claim()
        assert claimed is not None and claimed.job.id == poison.id
        clock.advance(LEASE + 1)
    assert await stores[2].claim() is None, "no third attempt"
    assert await stores[2].upkeep() == (0, 1, 0)
    failed = await stores[2].get(poison.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error_code == "worker_crashed" and failed.attempts == 2 and not failed.has_audio


async def test_recover_leaves_live_claims_alone(open_store: Any, make_request: MakeRequest, clock: Any) -> None:
    """At a process's start-up, jobs other processes run are theirs: only expired leases are orphaned."""
    a = await open_store(clock=clock)
    job, _ = await a.submit(make_request(b"running elsewhere"))
    claimed = await a.claim()
    assert claimed is not None
    starting = await open_store(clock=clock)
    assert await starting.recover() == (0, 0)
    assert (await starting.get(job.id)).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert await a.finish(job.id, claimed.token, transcript("fine"))


# -- models -------------------------------------------------------------------------------------------


async def test_claims_follow_the_models_a_worker_registered(
    open_store: Any, make_request: MakeRequest, table_rows: Any
) -> None:
    small = await open_store(models=TWO_MODELS, jobs__heartbeat_seconds=60, jobs__lease_seconds=120)
    large = await open_store(models=TWO_MODELS, jobs__heartbeat_seconds=60, jobs__lease_seconds=120)
    await small.register_worker(["tiny.en"], 1)
    await large.register_worker(["large-v3"], 2)
    big, _ = await small.submit(make_request(b"big", options=RecognitionOptions(model="large-v3")))
    other, _ = await small.submit(make_request(b"provider name", options=RecognitionOptions(model="whisper-1")))
    default, _ = await small.submit(make_request(b"no model named"))
    assert [await _model_of(small, table_rows, j.id) for j in (big, other, default)] == ["large-v3", "tiny.en", "tiny.en"]

    taken = await small.claim()
    assert taken is not None and taken.job.id == other.id, "the older large-model job is not for this worker"
    assert taken.job.options.model == "tiny.en", "the worker runs the model the job was routed to"
    assert (await small.claim()).job.id == default.id  # type: ignore[union-attr]
    assert await small.claim() is None
    on_gpu = await large.claim()
    assert on_gpu is not None and on_gpu.job.id == big.id and on_gpu.job.options.model == "large-v3"

    rows = await table_rows(small, "SELECT models, slots, stopped_at IS NULL FROM workers ORDER BY slots")
    assert rows == [(["tiny.en"], 1, True), (["large-v3"], 2, True)]
    await large.close()
    assert await table_rows(small, "SELECT slots FROM workers WHERE stopped_at IS NOT NULL") == [(2,)]


async def test_a_job_for_a_model_no_worker_serves_fails_after_the_wait(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    store = await open_store(clock=clock, models=TWO_MODELS, jobs__unserved_model_wait_seconds=60)
    await store.register_worker(["tiny.en"], 1)
    orphan, _ = await store.submit(
        make_request(b"needs the big model", options=RecognitionOptions(model="large-v3"), callback_url="https://pbx.example/hook")
    )
    served, _ = await store.submit(make_request(b"small job"))

    clock.advance(59)
    await store.heartbeat()
    assert await store.upkeep() == (0, 0, 0)
    clock.advance(2)
    await store.heartbeat()
    assert await store.upkeep() == (0, 0, 1)

    failed = await store.get(orphan.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error_code == "model_unavailable"
    assert failed.error is not None and "no worker serves the model 'large-v3'" in failed.error and "60 s" in failed.error
    assert failed.callback_status == "pending" and not failed.has_audio
    assert (await store.get(served.id)).status is JobStatus.QUEUED, "its model has a live worker"  # type: ignore[union-attr]


async def test_the_wait_for_a_model_counts_from_its_last_live_worker(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    """A backlog survives a worker restart: jobs fail only when no worker served their model for
    the whole wait, however long they have been queued."""
    settings = {"clock": clock, "jobs__unserved_model_wait_seconds": 60}
    gpu = await open_store(**settings)
    await gpu.register_worker(["tiny.en"], 1)
    api = await open_store(**settings)
    backlog, _ = await api.submit(make_request(b"queued long ago"))
    clock.advance(600)
    await gpu.heartbeat()
    await gpu.close()  # restarted: gone for a while
    clock.advance(59)
    assert await api.upkeep() == (0, 0, 0)
    assert (await api.get(backlog.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]
    clock.advance(2)
    assert await api.upkeep() == (0, 0, 1)


async def test_zero_waits_forever(open_store: Any, make_request: MakeRequest, clock: Any) -> None:
    store = await open_store(clock=clock, jobs__unserved_model_wait_seconds=0)
    job, _ = await store.submit(make_request(b"patient"))
    clock.advance(30 * 86_400)
    assert await store.upkeep() == (0, 0, 0)
    assert (await store.get(job.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]


async def test_retry_after_divides_by_the_live_workers_slots(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    store = await open_store(clock=clock, jobs__max_queued=4, jobs__heartbeat_seconds=60, jobs__lease_seconds=600)
    await store.register_worker(["tiny.en"], 4)
    job, _ = await store.submit(make_request(b"timed"))
    claimed = await store.claim()
    assert claimed is not None
    clock.advance(40)
    assert await store.finish(job.id, claimed.token, transcript("took 40 s"))
    for n in range(4):
        await store.submit(make_request(f"backlog {n}".encode()))
    with pytest.raises(QueueFull) as refused:
        await store.submit(make_request(b"one too many"))
    assert refused.value.retry_after_seconds == 40, "4 jobs x 40 s over 4 slots"


# -- wake-ups and restarts ---------------------------------------------------------------------------


async def _timed(awaitable: Any) -> float:
    started = time.monotonic()
    await awaitable
    return time.monotonic() - started


async def test_notify_wakes_idle_workers_and_waiting_requests_in_other_processes(
    open_store: Any, make_request: MakeRequest
) -> None:
    worker = await open_store(jobs__poll_interval_seconds=30)
    api = await open_store(jobs__poll_interval_seconds=30)
    worker_events, api_events = JobEvents(), JobEvents()
    await worker.start_background(worker_events)
    await api.start_background(api_events)
    await worker_events.wait_for_work(0.5)  # the "you may have missed something" wake at start
    await api_events.wait_for_work(0.5)

    idle = asyncio.create_task(_timed(worker_events.wait_for_work(60)))
    await asyncio.sleep(0.2)
    job, _ = await api.submit(make_request(b"new work"))
    assert await idle < WAKE_SECONDS, "the worker woke on NOTIFY, not on its 30 s poll"

    waiting = asyncio.create_task(_timed(api_events.wait_for_job(job.id, 60)))
    await asyncio.sleep(0.2)
    claimed = await worker.claim()
    assert claimed is not None
    assert await worker.finish(job.id, claimed.token, transcript("done elsewhere"))
    assert await waiting < WAKE_SECONDS, "the request woke when its job ended in another process"


async def test_a_worker_is_woken_only_for_models_it_serves(open_store: Any, make_request: MakeRequest) -> None:
    worker = await open_store(models=TWO_MODELS, jobs__heartbeat_seconds=60, jobs__lease_seconds=120)
    api = await open_store(models=TWO_MODELS)
    events = JobEvents()
    await worker.register_worker(["large-v3"], 1)
    await worker.start_background(events)
    await events.wait_for_work(0.5)
    await api.submit(make_request(b"small", options=RecognitionOptions(model="tiny.en")))
    assert await _timed(events.wait_for_work(1.0)) >= 0.9, "not woken for another model's job"
    await api.submit(make_request(b"big", options=RecognitionOptions(model="large-v3")))
    assert await _timed(events.wait_for_work(60)) < WAKE_SECONDS


async def test_a_postgresql_restart_is_a_pause_not_an_error(
    open_store: Any, make_request: MakeRequest, postgres_server: Any
) -> None:
    """Pooled connections and the LISTEN connection die with the server; the next operations
    wait for it and go on, and notifications flow again."""
    worker = await open_store(jobs__poll_interval_seconds=0.2)
    api = await open_store()
    events = JobEvents()
    await worker.start_background(events)
    before, _ = await api.submit(make_request(b"before the restart"))

    await asyncio.to_thread(postgres_server.restart)

    claimed = await worker.claim()
    assert claimed is not None and claimed.job.id == before.id
    assert await worker.finish(before.id, claimed.token, transcript("after the restart"))
    assert await api.ping()
    deadline = time.monotonic() + 10
    while True:  # the listener reconnects (and wakes once); then a new job's NOTIFY arrives
        await events.wait_for_work(0.2)
        after, _ = await api.submit(make_request(f"after {time.monotonic()}".encode()))
        if await _timed(events.wait_for_work(WAKE_SECONDS)) < WAKE_SECONDS:
            break
        assert time.monotonic() < deadline, "notifications never came back"


# -- submits from several API processes ----------------------------------------------------------------


async def test_concurrent_duplicates_make_one_job(open_store: Any, make_request: MakeRequest, table_rows: Any) -> None:
    apis = [await open_store() for _ in range(4)]
    results = await asyncio.gather(*(api.submit(make_request(b"the same voicemail")) for api in apis for _ in range(2)))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await table_rows(apis[0], "SELECT COUNT(*) FROM job_audio") == [(1,)], "the losers' audio rolled back"


async def test_the_queue_cap_holds_across_processes(open_store: Any, make_request: MakeRequest) -> None:
    apis = [await open_store(jobs__max_queued=3) for _ in range(3)]
    outcomes = await asyncio.gather(
        *(api.submit(make_request(f"call {n} via {i}".encode())) for i, api in enumerate(apis) for n in range(3)),
        return_exceptions=True,
    )
    assert sum(1 for o in outcomes if isinstance(o, tuple)) == 3
    assert sum(1 for o in outcomes if isinstance(o, QueueFull)) == 6
    assert (await apis[0].stats()).queued == 3


async def test_a_callback_is_leased_to_one_dispatcher(open_store: Any, make_request: MakeRequest, clock: Any) -> None:
    one = await open_store(clock=clock)
    two = await open_store(clock=clock)
    job, _ = await one.submit(make_request(b"hook", callback_url="https://pbx.example/hook"))
    claimed = await one.claim()
    assert claimed is not None and await one.finish(job.id, claimed.token, transcript("done"))
    assert [j.id for j in await one.due_callbacks()] == [job.id]
    assert await two.due_callbacks() == [], "being delivered by the other dispatcher"
    await one.record_callback(job.id, False, 10)
    clock.advance(11)
    assert [j.id for j in await two.due_callbacks()] == [job.id], "due again after the backoff"
    await two.record_callback(job.id, True, None)
    assert await one.callback_attempts(job.id) == 2
    assert (await one.get(job.id)).callback_status == "delivered"  # type: ignore[union-attr]


# -- schema and wiring ----------------------------------------------------------------------------------


async def test_stores_opening_together_migrate_once(
    open_store: Any, table_rows: Any, make_settings: Callable[..., Settings], postgres_server: Any
) -> None:
    stores = await asyncio.gather(*(open_store() for _ in range(4)))
    assert await table_rows(stores[0], "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
    settings = make_settings(jobs__store=stores[0]._dsn)
    assert await migrate_store(settings) == len(MIGRATIONS), "callpipe-asr migrate: nothing left to do"
    assert isinstance(store_for(settings), SharedJobStore)
    assert describe_dsn("postgresql://asr:s3cret@db.example:5433/jobs") == "postgresql://asr@db.example:5433/jobs"


async def test_a_failing_step_rolls_back_and_a_newer_schema_is_refused(
    open_store: Any, make_request: MakeRequest, table_rows: Any
) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request(b"must survive"))
    async with await psycopg.AsyncConnection.connect(store._dsn, autocommit=True) as connection:
        broken = MIGRATIONS + ("CREATE TABLE half_done (a INTEGER); INSERT INTO no_such_table VALUES (1)",)
        with pytest.raises(psycopg.errors.UndefinedTable):
            await migrate(connection, broken)
        assert await migrate(connection) == len(MIGRATIONS)
        tables = await (await connection.execute("SELECT to_regclass('half_done') IS NULL")).fetchone()
        assert tables == (True,), "the failed step left nothing behind"
        assert await migrate(connection, MIGRATIONS + ("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",)) == len(MIGRATIONS) + 1
    with pytest.raises(SchemaTooNew, match=f"schema version {len(MIGRATIONS) + 1}"):
        await open_store()
    assert await table_rows(store, "SELECT id, priority FROM jobs") == [(job.id, 0)]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"jobs__store": "mysql://asr:s3cret@db/jobs"}, "jobs.store: use sqlite or a postgresql://"),
        ({"jobs__heartbeat_seconds": 10, "jobs__lease_seconds": 15}, "jobs.lease_seconds"),
        ({"jobs__unserved_model_wait_seconds": 1}, "jobs.unserved_model_wait_seconds"),
        ({"jobs__serve_models": "tiny.en,large-v3"}, "jobs.serve_models: large-v3"),
        ({"jobs__pool_size": 1}, "jobs.pool_size"),
    ],
)
def test_scale_out_settings_are_checked(make_settings: Callable[..., Settings], overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)) as refused:
        make_settings(**overrides)
    assert "s3cret" not in str(refused.value), "a URL's password is never echoed"


def test_scale_out_settings_accept_a_postgresql_url(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(jobs__store="postgres://asr@db.example/jobs", models=TWO_MODELS, jobs__serve_models="large-v3")
    assert settings.uses_shared_store and settings.served_models == ("large-v3",)
    plain = make_settings()
    assert not plain.uses_shared_store and plain.served_models == tuple(plain.models), "empty: every model"
