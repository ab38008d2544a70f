"""The embedded job store: one SQLite file in WAL mode holding jobs, their audio and transcripts.

Every write commits with ``synchronous=FULL`` before the caller acknowledges anything, so an
accepted job survives SIGKILL or power loss. All access goes through one connection on one
dedicated thread: SQLite serialises writers anyway, and a single thread keeps the event loop
free without any locking of our own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ..errors import CallpipeError, QueueFull, StorageFull, StoreBusy
from ..settings import JobSettings
from ..transcript import AudioHints, RecognitionOptions, Transcript
from .model import ClaimedJob, Job, JobRequest, JobStatus, QueueStats

log = logging.getLogger(__name__)
T = TypeVar("T")

SECONDS_PER_DAY = 86_400.0
MAX_RETRY_AFTER_SECONDS = 300
JOB_COLUMNS = (
    "id, status, created_at, started_at, finished_at, expires_at, dialect, owner, filename, content_type, "
    "options, hints, attempts, error, error_code, transcript, audio_duration, "
    "EXISTS(SELECT 1 FROM job_audio a WHERE a.job_id = jobs.id) AS has_audio, metadata, callback_url, callback_status"
)

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, their audio apart (listing jobs never reads blobs), transcripts as JSON.
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        expires_at REAL,
        dialect TEXT NOT NULL,
        owner TEXT,
        filename TEXT,
        content_type TEXT,
        options TEXT NOT NULL,
        hints TEXT,
        dedupe_key TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        claim_token TEXT,
        error TEXT,
        error_code TEXT,
        transcript TEXT,
        audio_duration REAL
    );
    CREATE INDEX jobs_status_seq ON jobs (status, seq);
    CREATE INDEX jobs_dedupe ON jobs (dedupe_key, created_at);
    CREATE INDEX jobs_expires ON jobs (expires_at);
    CREATE TABLE job_audio (
        job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        data BLOB NOT NULL
    );
    """,
    # 2: what dialects remember per job, and durable result callbacks.
    """
    ALTER TABLE jobs ADD COLUMN metadata TEXT;
    ALTER TABLE jobs ADD COLUMN callback_url TEXT;
    ALTER TABLE jobs ADD COLUMN callback_status TEXT;
    ALTER TABLE jobs ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN callback_due_at REAL;
    CREATE INDEX jobs_owner_dialect ON jobs (owner, dialect, seq);
    CREATE INDEX jobs_callbacks ON jobs (callback_status, callback_due_at);
    """,
)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer callpipe-asr; refuse rather than damage it."""


def migrate(connection: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema to the newest version, one transaction per step; return that version."""
    connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = connection.execute("SELECT version FROM schema_version").fetchone()
    current = int(row[0]) if row else 0
    if row is None:
        connection.execute("INSERT INTO schema_version (version) VALUES (0)")
        connection.commit()
    if current > len(migrations):
        raise SchemaTooNew(f"the job database has schema version {current}; this callpipe-asr knows up to {len(migrations)}")
    for version in range(current + 1, len(migrations) + 1):
        log.info("upgrading job database schema to version %d", version)
        with connection:
            # Explicitly: Python's sqlite3 opens no transaction for DDL by itself, so without this a
            # step failing half-way would leave its first tables behind and never upgrade again.
            connection.execute("BEGIN")
            for statement in _statements(migrations[version - 1]):
                connection.execute(statement)
            connection.execute("UPDATE schema_version SET version = ?", (version,))
    return len(migrations)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class SQLiteJobStore:
    """Jobs in ``<data_dir>/jobs.sqlite3``; see the module docstring for the durability rules."""

    def __init__(self, path: Path, settings: JobSettings, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._settings = settings
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._connection: sqlite3.Connection | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open_sync)

    async def close(self) -> None:
        if self._connection is not None:
            await self._run(self._connection.close)
            self._connection = None
        self._executor.shutdown(wait=True)

    def _open_sync(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self._path, check_same_thread=False, isolation_level="DEFERRED")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=10000")
        try:
            migrate(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            trouble = _outside_trouble(exc)
            if trouble is None:
                raise
            raise trouble from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the job store is not open")
        return self._connection

    async def ping(self) -> bool:
        try:
            await self._run(lambda: self._db.execute("SELECT 1").fetchone())
        except (sqlite3.Error, RuntimeError, CallpipeError):
            return False
        return True

    # -- submitting ---------------------------------------------------------------------------

    async def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Store a job with its audio and commit; return it and whether it is new.

        A request matching a queued, running or recently finished job (same audio, options and
        key) returns that job instead. Over ``max_queued`` active jobs new work is refused with
        :class:`QueueFull`, except for callers that may exceed it, up to ``hard_max_queued``.
        """
        return await self._run(self._submit_sync, request)

    def _submit_sync(self, request: JobRequest) -> tuple[Job, bool]:
        now = self._clock()
        key = request.dedupe_key
        with self._db:
            row = self._db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE dedupe_key = ? AND (status IN ('queued', 'running') "
                "OR (status = 'done' AND finished_at >= ?)) ORDER BY seq DESC LIMIT 1",
                (key, now - self._settings.duplicate_window_seconds),
            ).fetchone()
            if row is not None:
                return _job_from_row(row), False
            self._check_free_space(len(request.audio))
            active = self._active_count()
            limit = self._settings.hard_max_queued if request.may_exceed_queue else self._settings.max_queued
            if active >= limit:
                raise QueueFull(
                    f"the queue is full ({active} jobs waiting or running); try again later",
                    self._retry_after_seconds(active),
                )
            job_id = secrets.token_urlsafe(16)
            self._db.execute(
                "INSERT INTO jobs (id, status, created_at, dialect, owner, filename, content_type, options, hints, "
                "dedupe_key, audio_duration, metadata, callback_url) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    request.audio_duration,
                    json.dumps(request.metadata),
                    request.callback_url,
                ),
            )
            self._db.execute("INSERT INTO job_audio (job_id, data) VALUES (?, ?)", (job_id, request.audio))
        job = self._get_sync(job_id)
        assert job is not None
        return job, True

    def _check_free_space(self, audio_bytes: int) -> None:
        """Refuse new work while the disk is too full to finish the work already accepted: a
        completely full disk fails every write, finishing and claiming included, and the
        write-ahead log cannot even be checkpointed into the database file. Pages freed inside
        the database (ended jobs' audio, purged jobs) count as room: SQLite reuses them."""
        reserve = self._settings.min_free_disk_bytes
        if not reserve:
            return
        page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        reusable = int(self._db.execute("PRAGMA freelist_count").fetchone()[0]) * page_size
        if shutil.disk_usage(self._path.parent).free + reusable < reserve + 2 * audio_bytes:
            raise StorageFull(
                "the server's disk is nearly full (jobs.min_free_disk_bytes); no new jobs are accepted "
                "until space is freed, so the accepted ones can finish"
            )

    def _active_count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()
        return int(row[0])

    def _retry_after_seconds(self, active: int) -> int:
        average = self._average_processing_seconds() or 5.0
        estimate = average * active / max(1, self._settings.workers)
        return int(min(MAX_RETRY_AFTER_SECONDS, max(1, round(estimate))))

    # -- working ------------------------------------------------------------------------------

    async def claim(self) -> ClaimedJob | None:
        """Take the oldest queued job for a worker, counting the attempt."""
        return await self._run(self._claim_sync)

    def _claim_sync(self) -> ClaimedJob | None:
        token = secrets.token_hex(16)
        with self._db:
            row = self._db.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, claim_token = ? "
                "WHERE seq = (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1) RETURNING id",
                (self._clock(), token),
            ).fetchone()
        if row is None:
            return None
        job_id = row[0]
        audio = self._db.execute("SELECT data FROM job_audio WHERE job_id = ?", (job_id,)).fetchone()
        job = self._get_sync(job_id)
        assert job is not None
        return ClaimedJob(job=job, audio=bytes(audio[0]) if audio else b"", token=token)

    async def finish(self, job_id: str, token: str, transcript: Transcript) -> bool:
        """Record the result; False when the claim is no longer held (job deleted or re-claimed)."""
        return await self._run(self._end_sync, job_id, token, JobStatus.DONE, json.dumps(transcript.to_dict()), None, None)

    async def fail(self, job_id: str, token: str, reason: str, code: str) -> bool:
        return await self._run(self._end_sync, job_id, token, JobStatus.FAILED, None, reason, code)

    def _end_sync(
        self, job_id: str, token: str, status: JobStatus, transcript: str | None, error: str | None, code: str | None
    ) -> bool:
        now = self._clock()
        expires = now + self._settings.retention_days * SECONDS_PER_DAY
        with self._db:
            updated = self._db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, expires_at = ?, transcript = ?, error = ?, "
                "error_code = ?, claim_token = NULL, "
                "callback_status = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, callback_due_at = ? "
                "WHERE id = ? AND claim_token = ? AND status = 'running'",
                (status.value, now, expires, transcript, error, code, now, job_id, token),
            ).rowcount
            if updated and not self._settings.keep_audio:
                self._db.execute("DELETE FROM job_audio WHERE job_id = ?", (job_id,))
        return bool(updated)

    async def release(self, job_id: str, token: str) -> bool:
        """Give a claimed job back to the queue without counting the attempt (clean shutdown)."""
        return await self._run(self._release_sync, job_id, token)

    def _release_sync(self, job_id: str, token: str) -> bool:
        with self._db:
            return bool(
                self._db.execute(
                    "UPDATE jobs SET status = 'queued', started_at = NULL, claim_token = NULL, "
                    "attempts = MAX(0, attempts - 1) WHERE id = ? AND claim_token = ? AND status = 'running'",
                    (job_id, token),
                ).rowcount
            )

    async def recover(self) -> tuple[int, int]:
        """At start-up: jobs left running by a dead process go back to the queue, or fail once they
        have used all their attempts (a job that kills the process must not crash-loop it)."""
        return await self._run(self._recover_sync)

    def _recover_sync(self) -> tuple[int, int]:
        now = self._clock()
        expires = now + self._settings.retention_days * SECONDS_PER_DAY
        attempts = self._settings.max_attempts
        with self._db:
            failed = self._db.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, expires_at = ?, claim_token = NULL, "
                "error_code = 'worker_crashed', error = 'processing this audio stopped the server ' || attempts || "
                "' times; it was not retried again', "
                "callback_status = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, callback_due_at = ? "
                "WHERE status = 'running' AND attempts >= ?",
                (now, expires, now, attempts),
            ).rowcount
            if failed and not self._settings.keep_audio:
                self._db.execute(
                    "DELETE FROM job_audio WHERE job_id IN (SELECT id FROM jobs WHERE status = 'failed')"
                )
            requeued = self._db.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, claim_token = NULL WHERE status = 'running'"
            ).rowcount
        if requeued or failed:
            log.warning("recovered jobs after an unclean stop: %d back in the queue, %d failed", requeued, failed)
        return requeued, failed

    # -- reading ------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        return await self._run(self._get_sync, job_id)

    def _get_sync(self, job_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job_from_row(row) if row else None

    async def audio(self, job_id: str) -> bytes | None:
        def read() -> bytes | None:
            row = self._db.execute("SELECT data FROM job_audio WHERE job_id = ?", (job_id,)).fetchone()
            return bytes(row[0]) if row else None

        return await self._run(read)

    async def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run; None when the job is not queued."""

        def position() -> int | None:
            row = self._db.execute(
                "SELECT COUNT(*) + 1 FROM jobs WHERE status = 'queued' AND seq < "
                "(SELECT seq FROM jobs WHERE id = ? AND status = 'queued')",
                (job_id,),
            ).fetchone()
            exists = self._db.execute("SELECT 1 FROM jobs WHERE id = ? AND status = 'queued'", (job_id,)).fetchone()
            return int(row[0]) if exists else None

        return await self._run(position)

    async def stats(self) -> QueueStats:
        def read() -> QueueStats:
            counts = dict(
                self._db.execute(
                    "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY status"
                ).fetchall()
            )
            return QueueStats(
                queued=int(counts.get("queued", 0)),
                running=int(counts.get("running", 0)),
                average_processing_seconds=self._average_processing_seconds(),
            )

        return await self._run(read)

    def _average_processing_seconds(self) -> float | None:
        row = self._db.execute(
            "SELECT AVG(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs "
            "WHERE status = 'done' AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT 50)"
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def count_active(self, owner: str | None) -> int:
        """Jobs of ``owner`` queued or running (a key's ``max_concurrent_jobs``)."""

        def read() -> int:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE owner IS ? AND status IN ('queued', 'running')", (owner,)
            ).fetchone()
            return int(row[0])

        return await self._run(read)

    async def oldest_queued_at(self) -> float | None:
        """When the longest-waiting queued job was created (Unix time); None with none queued."""

        def read() -> float | None:
            row = self._db.execute("SELECT MIN(created_at) FROM jobs WHERE status = 'queued'").fetchone()
            return float(row[0]) if row and row[0] is not None else None

        return await self._run(read)

    # -- removing -----------------------------------------------------------------------------

    async def delete(self, job_id: str) -> bool:
        def remove() -> bool:
            with self._db:
                return bool(self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount)

        return await self._run(remove)

    async def purge_expired(self) -> int:
        """Delete finished jobs whose retention has ended; return how many."""

        def purge() -> int:
            with self._db:
                return int(
                    self._db.execute(
                        "DELETE FROM jobs WHERE expires_at IS NOT NULL AND expires_at < ?", (self._clock(),)
                    ).rowcount
                )

        return await self._run(purge)


    # -- listing and callbacks -----------------------------------------------------------------

    async def list_jobs(self, owner: str | None, dialect: str, limit: int = 100) -> list[Job]:
        """The newest jobs of one dialect that belong to ``owner`` (None: jobs made without a key)."""

        def read() -> list[Job]:
            rows = self._db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner IS ? AND dialect = ? ORDER BY seq DESC LIMIT ?",
                (owner, dialect, limit),
            ).fetchall()
            return [_job_from_row(row) for row in rows]

        return await self._run(read)

    async def due_callbacks(self, limit: int = 20) -> list[Job]:
        """Ended jobs whose callback is pending and due now."""

        def read() -> list[Job]:
            rows = self._db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE callback_status = 'pending' AND callback_due_at <= ? "
                "ORDER BY callback_due_at LIMIT ?",
                (self._clock(), limit),
            ).fetchall()
            return [_job_from_row(row) for row in rows]

        return await self._run(read)

    async def record_callback(self, job_id: str, delivered: bool, retry_in_seconds: float | None) -> None:
        """After an attempt: delivered, due again in ``retry_in_seconds``, or (None) given up."""

        def write() -> None:
            status = "delivered" if delivered else ("pending" if retry_in_seconds is not None else "failed")
            with self._db:
                self._db.execute(
                    "UPDATE jobs SET callback_status = ?, callback_attempts = callback_attempts + 1, "
                    "callback_due_at = ? WHERE id = ?",
                    (status, self._clock() + (retry_in_seconds or 0), job_id),
                )

        await self._run(write)

    async def callback_attempts(self, job_id: str) -> int:
        def read() -> int:
            row = self._db.execute("SELECT callback_attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return int(row[0]) if row else 0

        return await self._run(read)

    # -- administration (``callpipe-asr jobs``; each call one short transaction) --------------

    async def find_jobs(self, status: JobStatus | None = None, since: float | None = None, limit: int = 100) -> list[Job]:
        """The newest jobs of every owner and dialect, optionally of one status and created at or
        after ``since`` (Unix time): what an administrator looks through."""

        def read() -> list[Job]:
            rows = self._db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE (? IS NULL OR status = ?) AND (? IS NULL OR created_at >= ?) "
                "ORDER BY seq DESC LIMIT ?",
                (status and status.value, status and status.value, since, since, limit),
            ).fetchall()
            return [_job_from_row(row) for row in rows]

        return await self._run(read)

    async def retry_failed(self, job_id: str) -> bool:
        """Put a failed job back in the queue as if new (attempts, error, result and callback
        reset); False unless it is failed and its audio is still stored. One statement checks
        both, so a job purged or changed meanwhile is never half-requeued."""

        def requeue() -> bool:
            with self._db:
                return bool(
                    self._db.execute(
                        "UPDATE jobs SET status = 'queued', attempts = 0, started_at = NULL, finished_at = NULL, "
                        "expires_at = NULL, error = NULL, error_code = NULL, transcript = NULL, claim_token = NULL, "
                        "callback_status = NULL, callback_attempts = 0, callback_due_at = NULL "
                        "WHERE id = ? AND status = 'failed' AND EXISTS (SELECT 1 FROM job_audio WHERE job_id = ?)",
                        (job_id, job_id),
                    ).rowcount
                )

        return await self._run(requeue)

    async def cancel_queued(self, job_id: str, reason: str, code: str) -> bool:
        """End a job that is still queued as failed with ``reason``; False when it is not queued
        (a worker that claimed it first wins: its job runs to its end)."""

        def cancel() -> bool:
            now = self._clock()
            with self._db:
                updated = self._db.execute(
                    "UPDATE jobs SET status = 'failed', finished_at = ?, expires_at = ?, error = ?, error_code = ?, "
                    "callback_status = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, callback_due_at = ? "
                    "WHERE id = ? AND status = 'queued'",
                    (now, now + self._settings.retention_days * SECONDS_PER_DAY, reason, code, now, job_id),
                ).rowcount
                if updated and not self._settings.keep_audio:
                    self._db.execute("DELETE FROM job_audio WHERE job_id = ?", (job_id,))
            return bool(updated)

        return await self._run(cancel)

    async def purge_finished_before(self, cutoff: float) -> int:
        """Delete done and failed jobs that ended before ``cutoff`` (Unix time), whatever their
        retention; return how many."""

        def purge() -> int:
            with self._db:
                return int(
                    self._db.execute(
                        "DELETE FROM jobs WHERE status IN ('done', 'failed') AND finished_at < ?", (cutoff,)
                    ).rowcount
                )

        return await self._run(purge)


def _outside_trouble(exc: sqlite3.OperationalError) -> CallpipeError | None:
    """A full disk or a lock held by another process as the client's 503 (the request changed
    nothing: its transaction rolled back); any other failure stays the bug it is."""
    message = str(exc).lower()
    if "disk is full" in message:  # SQLITE_FULL: "database or disk is full"
        return StorageFull("the server's disk is full; nothing was stored (free space in the data directory)")
    if "locked" in message or "busy" in message:
        return StoreBusy("the job database is locked by another process; try again shortly")
    return None


def _job_from_row(row: Sequence[Any]) -> Job:
    (job_id, status, created_at, started_at, finished_at, expires_at, dialect, owner, filename, content_type,
     options, hints, attempts, error, error_code, transcript, audio_duration, has_audio, metadata, callback_url,
     callback_status) = row
    return Job(
        id=job_id,
        status=JobStatus(status),
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        expires_at=expires_at,
        dialect=dialect,
        owner=owner,
        filename=filename,
        content_type=content_type,
        options=RecognitionOptions.from_dict(json.loads(options)),
        hints=AudioHints.from_dict(json.loads(hints)) if hints else None,
        attempts=attempts,
        error=error,
        error_code=error_code,
        transcript=Transcript.from_dict(json.loads(transcript)) if transcript else None,
        audio_duration=audio_duration,
        has_audio=bool(has_audio),
        metadata=json.loads(metadata) if metadata else {},
        callback_url=callback_url,
        callback_status=callback_status,
    )
