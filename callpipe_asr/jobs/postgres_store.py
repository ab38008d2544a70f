"""The shared job store: PostgreSQL, for API and worker processes on several machines.

The same protocol and the same rules as :class:`~.sqlite_store.SQLiteJobStore` (dedupe, queue
caps, claim tokens, callbacks, retention), with what several processes need on top:

- **Claims** take the oldest job with ``FOR UPDATE SKIP LOCKED`` (workers never wait on each
  other) among the models this worker registered, and carry a **lease**: a heartbeat renews the
  leases of the claims this process holds; a job whose lease ran out (its worker died, paused or
  lost the network) is claimed again, and each claim counts an attempt, so a job that kills
  every worker that takes it still ends ``failed`` after ``max_attempts``.
- **Fencing**: every claim has a fresh token and a result counts only with the current one, so a
  worker that lost its lease cannot overwrite the job another worker now holds: exactly once.
- **Wake-ups** travel as ``NOTIFY`` (a new job for a model, a job ended) and are relayed into the
  process's :class:`~.events.JobEvents`; everyone still polls, so a lost notification only costs
  ``poll_interval_seconds``.
- **Workers** register the models they serve; a queued job whose model no live worker has served
  for ``unserved_model_wait_seconds`` ends failed with a reason saying so.
- **A PostgreSQL restart** costs a pause, not an error: each operation is one transaction, retried
  on a lost connection for up to ``lease_seconds``. A longer outage (the server stopped or
  unreachable, no pooled connection in time) is our :class:`~callpipe_asr.errors.StoreUnavailable`
  (each dialect's 503 with ``Retry-After``; workers try again later), never psycopg's exception.

Times are Unix seconds from the injectable clock, as in SQLite: the machines' clocks must agree
(NTP) to within a small part of ``lease_seconds``; fencing keeps results exactly-once regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import socket
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from psycopg import AsyncConnection, OperationalError
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from ..aio import cancel_and_wait
from ..engines import resolve_model_name
from ..errors import CallpipeError, QueueFull, StorageFull, StoreUnavailable
from ..settings import Settings
from ..transcript import Transcript
from .events import JobEvents
from .model import ClaimedJob, Job, JobRequest, JobStatus, QueueStats

# One row shape for both stores: the column list is plain SQL both understand.
from .sqlite_store import JOB_COLUMNS, MAX_RETRY_AFTER_SECONDS, SECONDS_PER_DAY, SchemaTooNew, _job_from_row

log = logging.getLogger(__name__)
T = TypeVar("T")
Connection = AsyncConnection[tuple[Any, ...]]

WORK_CHANNEL = "callpipe_asr_work"
"""NOTIFY channel: a job for the model named in the payload can be claimed."""
ENDED_CHANNEL = "callpipe_asr_ended"
"""NOTIFY channel: the job whose id is the payload has ended (done, failed)."""
LOCK_NAMESPACE = 0x63616C6C
"""First key of our advisory locks ("call"); the second is per purpose and schema."""
SUBMIT_LOCK = "submit"
MIGRATE_LOCK = "migrate"
WORKER_ROW_KEEP_SECONDS = SECONDS_PER_DAY
"""How long a stopped or dead worker's row stays (it tells since when a model has had no worker)."""
RETRY_FIRST_DELAY_SECONDS = 0.05
RETRY_MAX_DELAY_SECONDS = 1.0
PING_TIMEOUT_SECONDS = 3.0
POOL_RECONNECT_SECONDS = 5.0
"""How long the pool keeps retrying one lost connection (its delays double from 1 s) before it
gives that attempt up; the next operation then starts a fresh attempt at once. psycopg's default
(5 minutes) would let the delay grow to a minute or more during a long outage, and the server
would go on answering 503 for that long after PostgreSQL is back."""

MIGRATIONS: tuple[str, ...] = (
    # 1: the SQLite schema (v2) plus the model a job runs on, claim leases and the workers.
    # The audio's foreign key is checked at commit, so a submit can send the audio before it
    # takes the submit lock and the lock is never held while a large upload travels.
    """
    CREATE TABLE jobs (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        expires_at DOUBLE PRECISION,
        dialect TEXT NOT NULL,
        owner TEXT,
        filename TEXT,
        content_type TEXT,
        options TEXT NOT NULL,
        hints TEXT,
        dedupe_key TEXT NOT NULL,
        model TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        claim_token TEXT,
        claimed_by TEXT,
        lease_expires_at DOUBLE PRECISION,
        error TEXT,
        error_code TEXT,
        transcript TEXT,
        audio_duration DOUBLE PRECISION,
        metadata TEXT,
        callback_url TEXT,
        callback_status TEXT,
        callback_attempts INTEGER NOT NULL DEFAULT 0,
        callback_due_at DOUBLE PRECISION
    );
    CREATE INDEX jobs_queued ON jobs (model, seq) WHERE status = 'queued';
    CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
    CREATE INDEX jobs_status ON jobs (status);
    CREATE INDEX jobs_dedupe ON jobs (dedupe_key, created_at);
    CREATE INDEX jobs_expires ON jobs (expires_at);
    CREATE INDEX jobs_owner_dialect ON jobs (owner, dialect, seq);
    CREATE INDEX jobs_callbacks ON jobs (callback_status, callback_due_at);
    CREATE TABLE job_audio (
        job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        data BYTEA NOT NULL
    );
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        models TEXT[] NOT NULL,
        slots INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        stopped_at DOUBLE PRECISION
    );
    """,
)

ENDED_COLUMNS = (
    "finished_at = %(now)s, expires_at = %(expires)s, claim_token = NULL, claimed_by = NULL, lease_expires_at = NULL, "
    "callback_status = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, callback_due_at = %(now)s"
)
"""What every way of ending a job sets, whoever ends it."""


# -- schema -------------------------------------------------------------------------------------


async def migrate(connection: Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema to the newest version, one transaction per step; return that version.

    Holds an advisory lock meanwhile, so processes starting together upgrade once, in turn.
    ``connection`` must be in autocommit mode (each step opens its own transaction).
    """
    await connection.execute("SELECT pg_advisory_lock(%s, hashtext(current_schema() || %s))", (LOCK_NAMESPACE, MIGRATE_LOCK))
    try:
        async with connection.transaction():
            await connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = await (await connection.execute("SELECT version FROM schema_version")).fetchone()
            if row is None:
                await connection.execute("INSERT INTO schema_version (version) VALUES (0)")
        current = int(row[0]) if row else 0
        if current > len(migrations):
            raise SchemaTooNew(f"the job database has schema version {current}; this callpipe-asr knows up to {len(migrations)}")
        for version in range(current + 1, len(migrations) + 1):
            log.info("upgrading job database schema to version %d", version)
            async with connection.transaction():
                await connection.execute(migrations[version - 1])  # several statements: no parameters
                await connection.execute("UPDATE schema_version SET version = %s", (version,))
    finally:
        await connection.execute("SELECT pg_advisory_unlock(%s, hashtext(current_schema() || %s))", (LOCK_NAMESPACE, MIGRATE_LOCK))
    return len(migrations)


def describe_dsn(dsn: str) -> str:
    """The connection string without its password, for logs."""
    with contextlib.suppress(Exception):
        parts = conninfo_to_dict(dsn)
        return f"postgresql://{parts.get('user', '')}@{parts.get('host', '')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"
    return "postgresql://(unparsable URL)"


# -- the store ----------------------------------------------------------------------------------


class PostgresJobStore:
    """Jobs in the PostgreSQL database ``settings.jobs.store`` names; see the module docstring."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._dsn = settings.jobs.store
        self._settings = settings.jobs
        self._app_settings = settings
        self._clock = clock
        self._pool: AsyncConnectionPool[Connection] | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """Who this process is in ``workers`` and ``jobs.claimed_by``."""
        self._served: tuple[str, ...] | None = None
        """Models this process claims jobs for; None (not registered): any."""
        self._slots = 0
        self._held: set[str] = set()
        """Tokens of the claims this process holds; the heartbeat renews exactly these."""
        self._tasks: list[asyncio.Task[None]] = []
        self._last_trouble = -math.inf
        """When (monotonic) an operation last found the database away; see :meth:`upkeep`."""

    # -- life cycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Apply pending migrations, then open the connection pool. A database that cannot be
        reached is :class:`StoreUnavailable` (the reason logged), not psycopg's exception."""
        await self.migrate()
        try:
            pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
                self._dsn,
                min_size=1,
                max_size=self._settings.pool_size,
                open=False,
                # After a PostgreSQL restart every pooled connection is dead: test each on checkout.
                check=AsyncConnectionPool.check_connection,
                reconnect_timeout=POOL_RECONNECT_SECONDS,
                name="callpipe-asr-jobs",
            )
            await pool.open(wait=True, timeout=max(5.0, self._settings.lease_seconds))
        except OperationalError as exc:  # PoolTimeout: no connection within the wait
            log.error("cannot open the job database %s: %s", describe_dsn(self._dsn), _reason(exc))
            raise _store_trouble(exc) from exc
        self._pool = pool

    async def migrate(self) -> int:
        """Upgrade the schema on a connection of its own (``callpipe-asr migrate`` and start-up)."""
        try:
            async with await AsyncConnection.connect(self._dsn, autocommit=True) as connection:
                return await migrate(connection)
        except OperationalError as exc:
            log.error("cannot reach the job database %s: %s", describe_dsn(self._dsn), _reason(exc))
            raise _store_trouble(exc) from exc

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self._pool is None:
            return
        if self._served is not None:
            with contextlib.suppress(Exception):  # best effort: an unmarked row just ages out
                await asyncio.wait_for(self._mark_stopped(), PING_TIMEOUT_SECONDS)
        await self._pool.close()
        self._pool = None

    async def ping(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with self._pool.connection(timeout=PING_TIMEOUT_SECONDS) as connection:
                await connection.execute("SELECT 1")
        except (OperationalError, asyncio.TimeoutError):
            return False
        return True

    async def _run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction, again on a lost connection (PostgreSQL restarting or
        failing over) until ``lease_seconds`` have passed; then :class:`StoreUnavailable` (or
        :class:`StorageFull` for the database server's full disk), never psycopg's exception,
        so a client gets its dialect's 503 and a worker tries again later. Waiting for a pooled
        connection counts against the same deadline. Our own errors (QueueFull) roll back and
        pass through untried."""
        if self._pool is None:
            raise RuntimeError("the job store is not open")
        started = time.monotonic()
        deadline = started + self._settings.lease_seconds
        delay = RETRY_FIRST_DELAY_SECONDS
        tries = 0
        while True:
            try:
                async with self._pool.connection(timeout=max(RETRY_FIRST_DELAY_SECONDS, deadline - time.monotonic())) as connection:
                    async with connection.transaction():
                        return await work(connection)
            except OperationalError as exc:  # PoolTimeout and psycopg.errors.AdminShutdown are ones too
                tries += 1
                self._last_trouble = time.monotonic()
                if time.monotonic() + delay > deadline:
                    log.warning("job database unavailable for %.1f s (%s); giving up this operation",
                                time.monotonic() - started, _reason(exc))
                    raise _store_trouble(exc) from exc
                # One line per outage and operation at WARNING; every try would flood the log.
                log.log(logging.WARNING if tries == 1 else logging.DEBUG,
                        "job database unavailable (%s); trying again for up to %.0f s", _reason(exc), deadline - time.monotonic())
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_DELAY_SECONDS, delay * 2)

    # -- background work: wake-ups, upkeep, heartbeat -----------------------------------------

    async def start_background(self, events: JobEvents) -> None:
        """Relay notifications into ``events`` and run the upkeep every ``heartbeat_seconds``
        until :meth:`close`. Returns once listening (or, with the database away, at once:
        polling covers the gap)."""
        listening = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._listen_forever(events, listening), name="store-listen"))
        self._tasks.append(asyncio.create_task(self._upkeep_forever(), name="store-upkeep"))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(listening.wait(), PING_TIMEOUT_SECONDS)

    async def _listen_forever(self, events: JobEvents, listening: asyncio.Event) -> None:
        """LISTEN on a connection of its own; reconnect after losing it (PostgreSQL restarted)."""
        lost = False
        while True:
            try:
                async with await AsyncConnection.connect(self._dsn, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {WORK_CHANNEL}")
                    await connection.execute(f"LISTEN {ENDED_CHANNEL}")
                    listening.set()
                    if lost:
                        log.info("the job database's notifications are back")
                        lost = False
                    events.work_added()  # whatever was notified while we were not listening
                    async for note in connection.notifies():
                        self._relay(note.channel, note.payload, events)
            except OperationalError as exc:
                # Once per outage at WARNING: the reconnection is tried every poll interval.
                log.log(logging.DEBUG if lost else logging.WARNING,
                        "lost the job database's notifications (%s); polling until they are back", _reason(exc))
                lost = True
            await asyncio.sleep(self._settings.poll_interval_seconds)

    def _relay(self, channel: str, payload: str, events: JobEvents) -> None:
        if channel == ENDED_CHANNEL:
            events.job_ended(payload)
        elif channel == WORK_CHANNEL and (self._served is None or payload in self._served):
            events.work_added()

    async def _upkeep_forever(self) -> None:
        while True:
            try:
                await self.upkeep()
            except StoreUnavailable as exc:  # the database is away; the next round tries again
                log.warning("job store upkeep skipped: %s", exc.message)
            except Exception:
                log.exception("job store upkeep failed")
            await asyncio.sleep(self._settings.heartbeat_seconds)

    async def upkeep(self) -> tuple[int, int, int]:
        """One round of what any process does for all: requeue or fail jobs whose lease ran out,
        fail jobs no worker can serve, forget long-gone workers. Returns (requeued, failed after
        crashes, failed as unserved).

        Just after an outage nothing is reaped (see :meth:`_leases_in_doubt`).
        """
        if self._leases_in_doubt():
            requeued = crashed = unserved = 0
        else:
            requeued, crashed = await self.recover()
            unserved = await self.fail_unserved()
        await self._run(self._forget_old_workers)
        return requeued, crashed, unserved

    def _leases_in_doubt(self) -> bool:
        """Whether this process found the database away within the last ``lease_seconds``.

        After an outage longer than the lease every lease looks expired, the live workers' too,
        until their next heartbeat renews them; meanwhile no job is taken from its worker (by
        :meth:`upkeep` or :meth:`claim`), or a worker that kept its transcript through the outage
        would see the job recognised a second time. (The claim tokens keep the results
        exactly-once regardless; this saves the work.) A worker that really died loses its jobs
        one lease later than otherwise.
        """
        return time.monotonic() - self._last_trouble < self._settings.lease_seconds

    async def register_worker(self, models: Sequence[str], slots: int) -> None:
        """From now on claim only jobs for ``models``, announce them in ``workers`` and keep
        this process's claims alive with a heartbeat every ``heartbeat_seconds``."""
        self._served = tuple(models)
        self._slots = slots
        await self.heartbeat()
        self._tasks.append(asyncio.create_task(self._heartbeat_forever(), name="store-heartbeat"))
        log.info("worker %s serves %s with %d slot(s)", self.worker_id, ", ".join(models), slots)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            try:
                await self.heartbeat()
            except StoreUnavailable as exc:  # the leases last lease_seconds: a few missed beats lose nothing
                log.warning("worker heartbeat failed: %s", exc.message)
            except Exception:
                log.exception("worker heartbeat failed")

    async def heartbeat(self) -> int:
        """Say this worker is alive and renew the leases of its claims; return how many.

        A claim whose row no longer carries our token (re-claimed after our lease ran out,
        deleted, requeued) is dropped: its result would be refused anyway.
        """
        tokens = list(self._held)

        async def beat(connection: Connection) -> set[str]:
            now = self._clock()
            if self._served is not None:
                await connection.execute(
                    "INSERT INTO workers (id, host, pid, models, slots, started_at, heartbeat_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
                    "SET heartbeat_at = EXCLUDED.heartbeat_at, models = EXCLUDED.models, slots = EXCLUDED.slots, stopped_at = NULL",
                    (self.worker_id, socket.gethostname(), os.getpid(), list(self._served), self._slots, now, now),
                )
            cursor = await connection.execute(
                "UPDATE jobs SET lease_expires_at = %s WHERE claim_token = ANY(%s::text[]) AND status = 'running' "
                "RETURNING claim_token",
                (now + self._settings.lease_seconds, tokens),
            )
            return {str(row[0]) for row in await cursor.fetchall()}

        renewed = await self._run(beat)
        lost = set(tokens) - renewed
        if lost:
            log.warning("worker %s lost %d claim(s) (re-claimed after their lease ran out, or deleted)", self.worker_id, len(lost))
            self._held -= lost
        return len(renewed)

    async def _mark_stopped(self) -> None:
        async def mark(connection: Connection) -> None:
            await connection.execute("UPDATE workers SET stopped_at = %s WHERE id = %s", (self._clock(), self.worker_id))

        await self._run(mark)

    async def _forget_old_workers(self, connection: Connection) -> None:
        keep = max(WORKER_ROW_KEEP_SECONDS, 2 * self._settings.unserved_model_wait_seconds)
        await connection.execute("DELETE FROM workers WHERE heartbeat_at < %s", (self._clock() - keep,))

    # -- submitting ---------------------------------------------------------------------------

    async def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Store a job with its audio and commit; return it and whether it is new.

        The rules are SQLite's (see :meth:`SQLiteJobStore.submit`). Submits from every API
        process serialise on an advisory lock for the duplicate check and the queue count only:
        the audio is sent before the lock is taken.
        """
        key = request.dedupe_key
        model = resolve_model_name(request.options.model, self._app_settings)
        job_id = secrets.token_urlsafe(16)

        async def store(connection: Connection) -> tuple[Job, bool]:
            now = self._clock()
            existing = await self._duplicate(connection, key, now)
            if existing is not None:
                return existing, False
            await connection.execute("INSERT INTO job_audio (job_id, data) VALUES (%s, %b)", (job_id, request.audio))
            await connection.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema() || %s))", (LOCK_NAMESPACE, SUBMIT_LOCK)
            )
            existing = await self._duplicate(connection, key, now)
            if existing is not None:
                raise _Duplicate(existing)  # rolls the audio back
            active = await self._active_count(connection)
            limit = self._settings.hard_max_queued if request.may_exceed_queue else self._settings.max_queued
            if active >= limit:
                raise QueueFull(
                    f"the queue is full ({active} jobs waiting or running); try again later",
                    await self._retry_after_seconds(connection, active),
                )
            await self._insert_job(connection, request, job_id, key, model, now)
            await _notify(connection, WORK_CHANNEL, model)
            job = await _get(connection, job_id)
            assert job is not None
            return job, True

        try:
            return await self._run(store)
        except _Duplicate as duplicate:
            return duplicate.job, False

    async def _duplicate(self, connection: Connection, key: str, now: float) -> Job | None:
        cursor = await connection.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE dedupe_key = %s AND (status IN ('queued', 'running') "
            "OR (status = 'done' AND finished_at >= %s)) ORDER BY seq DESC LIMIT 1",
            (key, now - self._settings.duplicate_window_seconds),
        )
        row = await cursor.fetchone()
        return _job_from_row(row) if row else None

    async def _insert_job(
        self, connection: Connection, request: JobRequest, job_id: str, key: str, model: str, now: float
    ) -> None:
        await connection.execute(
            "INSERT INTO jobs (id, status, created_at, dialect, owner, filename, content_type, options, hints, "
            "dedupe_key, model, audio_duration, metadata, callback_url) "
            "VALUES (%s, 'queued', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                job_id,
                now,
                request.dialect,
                request.owner,
                request.filename,
                request.content_type,
                json.dumps(request.options.to_dict()),
                json.dumps(request.hints.to_dict()) if request.hints else None,
                key,
                model,
                request.audio_duration,
                json.dumps(request.metadata),
                request.callback_url,
            ),
        )

    async def _active_count(self, connection: Connection) -> int:
        cursor = await connection.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _retry_after_seconds(self, connection: Connection, active: int) -> int:
        """As SQLite's estimate, dividing by the slots of the live workers (this process's
        ``jobs.workers`` while none has registered)."""
        average = await _average_processing_seconds(connection) or 5.0
        estimate = average * active / max(1, await self._live_slots(connection) or self._settings.workers)
        return int(min(MAX_RETRY_AFTER_SECONDS, max(1, round(estimate))))

    async def _live_slots(self, connection: Connection) -> int:
        cursor = await connection.execute(
            "SELECT COALESCE(SUM(slots), 0) FROM workers WHERE stopped_at IS NULL AND heartbeat_at >= %s",
            (self._clock() - self._settings.lease_seconds,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # -- working ------------------------------------------------------------------------------

    async def claim(self) -> ClaimedJob | None:
        """Take the oldest job this worker can run, counting the attempt: first a running job
        whose lease ran out (its worker is gone) while it has attempts left, else a queued one
        (only a queued one just after an outage: :meth:`_leases_in_doubt`).

        The job comes with ``options.model`` set to the model it was routed by at submit, so the
        worker runs exactly what its registration promised, whatever its own default model is.
        """

        async def take(connection: Connection) -> ClaimedJob | None:
            # A token per try: a claim whose commit was lost with the connection stays unheld
            # (no heartbeat renews it), so its lease runs out and the job is claimed again.
            token = secrets.token_hex(16)
            now = self._clock()
            taken = None
            if not self._leases_in_doubt():
                taken = await self._take(connection, token, now, "status = 'running' AND lease_expires_at < %(now)s AND attempts < %(max)s")
            if taken is None:
                taken = await self._take(connection, token, now, "status = 'queued'")
            if taken is None:
                return None
            job_id, model = taken
            cursor = connection.cursor(binary=True)  # bytea as bytes, no hex round trip
            await cursor.execute("SELECT data FROM job_audio WHERE job_id = %s", (job_id,))
            audio = await cursor.fetchone()
            job = await _get(connection, job_id)
            assert job is not None
            routed = dataclasses.replace(job, options=dataclasses.replace(job.options, model=model))
            return ClaimedJob(job=routed, audio=bytes(audio[0]) if audio else b"", token=token)

        claimed = await self._run(take)
        if claimed is not None:
            self._held.add(claimed.token)
        return claimed

    async def _take(self, connection: Connection, token: str, now: float, condition: str) -> tuple[str, str] | None:
        cursor = await connection.execute(
            "WITH next AS (SELECT seq FROM jobs WHERE " + condition + " AND "
            "(%(models)s::text[] IS NULL OR model = ANY(%(models)s::text[])) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "UPDATE jobs SET status = 'running', started_at = %(now)s, attempts = attempts + 1, claim_token = %(token)s, "
            "claimed_by = %(worker)s, lease_expires_at = %(lease)s FROM next WHERE jobs.seq = next.seq "
            "RETURNING jobs.id, jobs.model",
            {
                "now": now,
                "max": self._settings.max_attempts,
                "models": list(self._served) if self._served is not None else None,
                "token": token,
                "worker": self.worker_id,
                "lease": now + self._settings.lease_seconds,
            },
        )
        row = await cursor.fetchone()
        return (str(row[0]), str(row[1])) if row else None

    async def finish(self, job_id: str, token: str, transcript: Transcript) -> bool:
        """Record the result; False when the claim is no longer held (job deleted or re-claimed)."""
        return await self._end(job_id, token, JobStatus.DONE, json.dumps(transcript.to_dict()), None, None)

    async def fail(self, job_id: str, token: str, reason: str, code: str) -> bool:
        return await self._end(job_id, token, JobStatus.FAILED, None, reason, code)

    async def _end(
        self, job_id: str, token: str, status: JobStatus, transcript: str | None, error: str | None, code: str | None
    ) -> bool:
        async def end(connection: Connection) -> bool:
            now = self._clock()
            cursor = await connection.execute(
                f"UPDATE jobs SET status = %(status)s, transcript = %(transcript)s, error = %(error)s, error_code = %(code)s, "
                f"{ENDED_COLUMNS} WHERE id = %(id)s AND claim_token = %(token)s AND status = 'running' RETURNING id",
                {**self._ended_at(now), "status": status.value, "transcript": transcript, "error": error, "code": code,
                 "id": job_id, "token": token},
            )
            if await cursor.fetchone() is None:
                return False
            await self._after_ending(connection, [job_id])
            return True

        try:
            return await self._run(end)
        finally:
            self._held.discard(token)  # stored, refused or given up on: no heartbeat keeps it

    def _ended_at(self, now: float) -> dict[str, float]:
        return {"now": now, "expires": now + self._settings.retention_days * SECONDS_PER_DAY}

    async def _after_ending(self, connection: Connection, job_ids: list[str]) -> None:
        if not self._settings.keep_audio:
            await connection.execute("DELETE FROM job_audio WHERE job_id = ANY(%s::text[])", (job_ids,))
        for job_id in job_ids:
            await _notify(connection, ENDED_CHANNEL, job_id)

    async def release(self, job_id: str, token: str) -> bool:
        """Give a claimed job back to the queue without counting the attempt (clean shutdown)."""

        async def give_back(connection: Connection) -> bool:
            cursor = await connection.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, claim_token = NULL, claimed_by = NULL, "
                "lease_expires_at = NULL, attempts = GREATEST(0, attempts - 1) "
                "WHERE id = %s AND claim_token = %s AND status = 'running' RETURNING model",
                (job_id, token),
            )
            row = await cursor.fetchone()
            if row is not None:
                await _notify(connection, WORK_CHANNEL, row[0])
            return row is not None

        try:
            return await self._run(give_back)
        finally:
            self._held.discard(token)

    async def recover(self) -> tuple[int, int]:
        """Jobs whose lease ran out go back to the queue, or fail once they have used all their
        attempts. Unlike SQLite, where at start-up every running job is orphaned, a running job
        here may be in the hands of a live worker elsewhere: only expired leases are orphaned."""

        async def reap(connection: Connection) -> tuple[int, int]:
            now = self._clock()
            cursor = await connection.execute(
                "UPDATE jobs SET status = 'failed', error_code = 'worker_crashed', "
                "error = 'processing this audio stopped the server ' || attempts || ' times; it was not retried again', "
                f"{ENDED_COLUMNS} WHERE status = 'running' AND lease_expires_at < %(now)s AND attempts >= %(max)s RETURNING id",
                {**self._ended_at(now), "max": self._settings.max_attempts},
            )
            failed = [row[0] for row in await cursor.fetchall()]
            await self._after_ending(connection, failed)
            cursor = await connection.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, claim_token = NULL, claimed_by = NULL, "
                "lease_expires_at = NULL WHERE status = 'running' AND lease_expires_at < %s RETURNING model",
                (now,),
            )
            models = {row[0] for row in await cursor.fetchall()}
            for model in models:
                await _notify(connection, WORK_CHANNEL, model)
            return cursor.rowcount, len(failed)

        requeued, failed = await self._run(reap)
        if requeued or failed:
            log.warning("recovered jobs whose worker stopped: %d back in the queue, %d failed", requeued, failed)
        return requeued, failed

    async def fail_unserved(self) -> int:
        """End the queued jobs whose model no worker has served (no heartbeat) for the whole of
        the last ``unserved_model_wait_seconds``, and which have waited that long; return how many."""
        wait = self._settings.unserved_model_wait_seconds
        if wait <= 0:
            return 0

        async def give_up(connection: Connection) -> list[str]:
            now = self._clock()
            cursor = await connection.execute(
                "UPDATE jobs SET status = 'failed', error_code = 'model_unavailable', "
                "error = 'no worker serves the model ''' || model || '''; the job waited ' || %(wait)s::text || "
                "' s for one and was given up', "
                f"{ENDED_COLUMNS} WHERE status = 'queued' AND created_at <= %(cutoff)s AND NOT EXISTS "
                "(SELECT 1 FROM workers w WHERE jobs.model = ANY(w.models) AND w.heartbeat_at > %(cutoff)s) RETURNING id",
                {**self._ended_at(now), "cutoff": now - wait, "wait": f"{wait:g}"},
            )
            failed = [row[0] for row in await cursor.fetchall()]
            await self._after_ending(connection, failed)
            return failed

        failed = await self._run(give_up)
        if failed:
            log.warning("%d job(s) failed: no live worker serves their model", len(failed))
        return len(failed)

    # -- reading ------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        return await self._run(lambda connection: _get(connection, job_id))

    async def audio(self, job_id: str) -> bytes | None:
        async def read(connection: Connection) -> bytes | None:
            cursor = connection.cursor(binary=True)
            await cursor.execute("SELECT data FROM job_audio WHERE job_id = %s", (job_id,))
            row = await cursor.fetchone()
            return bytes(row[0]) if row else None

        return await self._run(read)

    async def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run; None when the job is not queued."""

        async def position(connection: Connection) -> int | None:
            cursor = await connection.execute(
                "SELECT (SELECT COUNT(*) + 1 FROM jobs q WHERE q.status = 'queued' AND q.seq < j.seq) "
                "FROM jobs j WHERE j.id = %s AND j.status = 'queued'",
                (job_id,),
            )
            row = await cursor.fetchone()
            return int(row[0]) if row else None

        return await self._run(position)

    async def stats(self) -> QueueStats:
        async def read(connection: Connection) -> QueueStats:
            cursor = await connection.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY status"
            )
            counts = {status: int(count) for status, count in await cursor.fetchall()}
            return QueueStats(
                queued=counts.get("queued", 0),
                running=counts.get("running", 0),
                average_processing_seconds=await _average_processing_seconds(connection),
            )

        return await self._run(read)

    async def count_active(self, owner: str | None) -> int:
        """Jobs of ``owner`` queued or running, in every process that shares this database (a
        key's ``max_concurrent_jobs``; None: jobs made without a key). Without it the service
        could not enforce that limit here (see :class:`~.service.QueueInsight`)."""

        async def read(connection: Connection) -> int:
            cursor = await connection.execute(
                "SELECT COUNT(*) FROM jobs WHERE owner IS NOT DISTINCT FROM %s AND status IN ('queued', 'running')",
                (owner,),
            )
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._run(read)

    async def oldest_queued_at(self) -> float | None:
        """When the longest-waiting queued job was created (Unix time, from the clock of the
        process that accepted it); None with none queued. Feeds the oldest-queued-age metric."""

        async def read(connection: Connection) -> float | None:
            cursor = await connection.execute("SELECT MIN(created_at) FROM jobs WHERE status = 'queued'")
            row = await cursor.fetchone()
            return float(row[0]) if row and row[0] is not None else None

        return await self._run(read)

    # -- removing -----------------------------------------------------------------------------

    async def delete(self, job_id: str) -> bool:
        async def remove(connection: Connection) -> bool:
            cursor = await connection.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
            return cursor.rowcount > 0

        return await self._run(remove)

    async def purge_expired(self) -> int:
        """Delete finished jobs whose retention has ended; return how many."""

        async def purge(connection: Connection) -> int:
            cursor = await connection.execute(
                "DELETE FROM jobs WHERE expires_at IS NOT NULL AND expires_at < %s", (self._clock(),)
            )
            return cursor.rowcount

        return await self._run(purge)

    # -- listing and callbacks -----------------------------------------------------------------

    async def list_jobs(self, owner: str | None, dialect: str, limit: int = 100) -> list[Job]:
        """The newest jobs of one dialect that belong to ``owner`` (None: jobs made without a key)."""

        async def read(connection: Connection) -> list[Job]:
            cursor = await connection.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner IS NOT DISTINCT FROM %s AND dialect = %s "
                "ORDER BY seq DESC LIMIT %s",
                (owner, dialect, limit),
            )
            return [_job_from_row(row) for row in await cursor.fetchall()]

        return await self._run(read)

    async def due_callbacks(self, limit: int = 20) -> list[Job]:
        """Ended jobs whose callback is pending and due now.

        Every API process runs a dispatcher, so the jobs returned are leased to this one: their
        due time moves past the longest delivery attempt, and :meth:`record_callback` sets the
        real one. A dispatcher that dies mid-delivery leaves its callbacks due again later.
        """
        lease = max(self._settings.lease_seconds, 2 * self._app_settings.providers.remote_timeout_seconds)

        async def take(connection: Connection) -> list[Job]:
            now = self._clock()
            cursor = await connection.execute(
                "WITH due AS (SELECT seq, callback_due_at FROM jobs WHERE callback_status = 'pending' "
                "AND callback_due_at <= %(now)s ORDER BY callback_due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED), "
                "leased AS (UPDATE jobs SET callback_due_at = %(until)s FROM due WHERE jobs.seq = due.seq "
                "RETURNING jobs.seq, due.callback_due_at AS due_at) "
                f"SELECT {JOB_COLUMNS} FROM jobs JOIN leased ON leased.seq = jobs.seq ORDER BY leased.due_at",
                {"now": now, "limit": limit, "until": now + lease},
            )
            return [_job_from_row(row) for row in await cursor.fetchall()]

        return await self._run(take)

    async def record_callback(self, job_id: str, delivered: bool, retry_in_seconds: float | None) -> None:
        """After an attempt: delivered, due again in ``retry_in_seconds``, or (None) given up."""
        status = "delivered" if delivered else ("pending" if retry_in_seconds is not None else "failed")

        async def write(connection: Connection) -> None:
            await connection.execute(
                "UPDATE jobs SET callback_status = %s, callback_attempts = callback_attempts + 1, "
                "callback_due_at = %s WHERE id = %s",
                (status, self._clock() + (retry_in_seconds or 0), job_id),
            )

        await self._run(write)

    async def callback_attempts(self, job_id: str) -> int:
        async def read(connection: Connection) -> int:
            cursor = await connection.execute("SELECT callback_attempts FROM jobs WHERE id = %s", (job_id,))
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._run(read)


    # -- administration (``callpipe-asr jobs``; the rules are SQLite's) --------------------------

    async def find_jobs(self, status: JobStatus | None = None, since: float | None = None, limit: int = 100) -> list[Job]:
        """The newest jobs of every owner and dialect, optionally of one status and created at or
        after ``since`` (Unix time)."""

        async def read(connection: Connection) -> list[Job]:
            cursor = await connection.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE (%(status)s::text IS NULL OR status = %(status)s::text) "
                "AND (%(since)s::float8 IS NULL OR created_at >= %(since)s::float8) ORDER BY seq DESC LIMIT %(limit)s",
                {"status": status.value if status else None, "since": since, "limit": limit},
            )
            return [_job_from_row(row) for row in await cursor.fetchall()]

        return await self._run(read)

    async def retry_failed(self, job_id: str) -> bool:
        """Put a failed job whose audio is still stored back in the queue as if new."""

        async def requeue(connection: Connection) -> bool:
            cursor = await connection.execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, started_at = NULL, finished_at = NULL, "
                "expires_at = NULL, error = NULL, error_code = NULL, transcript = NULL, claim_token = NULL, "
                "claimed_by = NULL, lease_expires_at = NULL, callback_status = NULL, callback_attempts = 0, "
                "callback_due_at = NULL WHERE id = %(id)s AND status = 'failed' "
                "AND EXISTS (SELECT 1 FROM job_audio WHERE job_id = %(id)s) RETURNING model",
                {"id": job_id},
            )
            row = await cursor.fetchone()
            if row is not None:
                await _notify(connection, WORK_CHANNEL, row[0])
            return row is not None

        return await self._run(requeue)

    async def cancel_queued(self, job_id: str, reason: str, code: str) -> bool:
        """End a job that is still queued as failed with ``reason``; False when it is not queued."""

        async def cancel(connection: Connection) -> bool:
            cursor = await connection.execute(
                f"UPDATE jobs SET status = 'failed', error = %(error)s, error_code = %(code)s, {ENDED_COLUMNS} "
                "WHERE id = %(id)s AND status = 'queued' RETURNING id",
                {**self._ended_at(self._clock()), "error": reason, "code": code, "id": job_id},
            )
            if await cursor.fetchone() is None:
                return False
            await self._after_ending(connection, [job_id])
            return True

        return await self._run(cancel)

    async def purge_finished_before(self, cutoff: float) -> int:
        """Delete done and failed jobs that ended before ``cutoff`` (Unix time); return how many."""

        async def purge(connection: Connection) -> int:
            cursor = await connection.execute(
                "DELETE FROM jobs WHERE status IN ('done', 'failed') AND finished_at < %s", (cutoff,)
            )
            return cursor.rowcount

        return await self._run(purge)


class _Duplicate(Exception):
    """Raised inside a submit's transaction to roll its audio back and return this job instead."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


def _reason(exc: OperationalError) -> str:
    """psycopg's message on one line, for the log (it may name hosts: never sent to clients)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _store_trouble(exc: OperationalError) -> CallpipeError:
    """The client's 503 for a database that cannot take an operation now (its transaction rolled
    back, or never began): the database server's disk full is :class:`StorageFull`; anything
    else (connection refused or lost, an administrator's shutdown, no pooled connection within
    the wait) :class:`StoreUnavailable`. Neither message carries psycopg's (hosts, users)."""
    if isinstance(exc, pg_errors.DiskFull):
        return StorageFull("the job database's disk is full; nothing was stored")
    return StoreUnavailable("the job store is unavailable (its database cannot be reached); try again shortly")


async def _get(connection: Connection, job_id: str) -> Job | None:
    cursor = await connection.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
    row = await cursor.fetchone()
    return _job_from_row(row) if row else None


async def _notify(connection: Connection, channel: str, payload: str) -> None:
    """Queue a notification; PostgreSQL delivers it when (and only if) the transaction commits."""
    await connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def _average_processing_seconds(connection: Connection) -> float | None:
    cursor = await connection.execute(
        "SELECT AVG(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs "
        "WHERE status = 'done' AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT 50) recent"
    )
    row = await cursor.fetchone()
    return float(row[0]) if row and row[0] is not None else None
