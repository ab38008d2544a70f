"""What only the SQLite store has: the file itself. An accepted job is on disk for any other
connection and survives SIGKILL; the schema carries a version and upgrades in place. These stay
SQLite-only because they are about the file and its PRAGMAs (the PostgreSQL store's durability is
the server's, and its migrations are tested in ``test_postgres_store.py``); every rule both
stores share is in ``test_job_store.py``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from callpipe_asr.jobs import JobRequest, JobStatus
from callpipe_asr.jobs.sqlite_store import MIGRATIONS, SchemaTooNew, migrate
from callpipe_asr.settings import Settings

MakeRequest = Callable[..., JobRequest]


def db_rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


# -- durability -------------------------------------------------------------------------------------


async def test_an_accepted_job_is_on_disk_for_any_other_store(
    open_store: Any, make_request: MakeRequest, make_settings: Callable[..., Settings], prompt: Any
) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request(prompt.audio, filename="vm.wav"))

    other = await open_store()  # another connection on the same file, while the first is still open
    seen = await other.get(job.id)
    assert seen is not None and seen.status is JobStatus.QUEUED and seen.filename == "vm.wav"
    assert await other.audio(job.id) == prompt.audio

    claimed = await store.claim()
    assert claimed is not None
    await store.close()  # closed without finishing
    await other.close()

    assert db_rows(make_settings().database_path, "SELECT id, status FROM jobs") == [(job.id, "running")]
    reopened = await open_store()
    assert await reopened.recover() == (1, 0)
    again = await reopened.claim()
    assert again is not None and again.job.id == job.id and again.audio == prompt.audio


def test_a_job_survives_sigkill_right_after_submit(make_settings: Callable[..., Settings], prompt: Any) -> None:
    """A child process submits, prints the id (the acknowledgement) and SIGKILLs itself."""
    settings = make_settings()
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        from pathlib import Path
        from callpipe_asr.jobs import JobRequest
        from callpipe_asr.jobs.sqlite_store import SQLiteJobStore
        from callpipe_asr.settings import JobSettings
        from callpipe_asr.transcript import RecognitionOptions

        async def main():
            store = SQLiteJobStore(Path({str(settings.database_path)!r}), JobSettings())
            await store.open()
            job, _ = await store.submit(JobRequest(audio=Path({str(prompt.path)!r}).read_bytes(), options=RecognitionOptions()))
            print(job.id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    job_id = result.stdout.strip()
    assert job_id
    rows = db_rows(
        settings.database_path,
        "SELECT j.status, a.data FROM jobs j JOIN job_audio a ON a.job_id = j.id WHERE j.id = ?",
        job_id,
    )
    assert rows == [("queued", prompt.audio)]


# -- schema versioning ------------------------------------------------------------------------------


def _version(path: Path) -> int:
    return int(db_rows(path, "SELECT version FROM schema_version")[0][0])


async def test_a_new_database_gets_the_current_schema(open_store: Any, make_settings: Callable[..., Settings]) -> None:
    await open_store()
    path = make_settings().database_path
    assert _version(path) == len(MIGRATIONS)
    assert db_rows(path, "SELECT COUNT(*) FROM schema_version") == [(1,)]
    assert db_rows(path, "PRAGMA journal_mode") == [("wal",)]


async def test_an_older_database_upgrades_itself_when_opened(
    open_store: Any, make_settings: Callable[..., Settings]
) -> None:
    path = make_settings().database_path
    path.parent.mkdir(parents=True)
    connection = sqlite3.connect(path)
    assert migrate(connection, ()) == 0  # a database from before the first table
    connection.close()
    store = await open_store()
    assert _version(path) == len(MIGRATIONS)
    assert await store.ping()


async def test_migrate_applies_new_steps_and_keeps_the_data(
    open_store: Any, make_request: MakeRequest, make_settings: Callable[..., Settings]
) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request(b"kept across upgrades", filename="old.wav"))
    await store.close()

    path = make_settings().database_path
    newer = MIGRATIONS + (
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0; "
        "CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
    )
    connection = sqlite3.connect(path, isolation_level="DEFERRED")
    try:
        assert migrate(connection, newer) == len(MIGRATIONS) + 1
        assert migrate(connection, newer) == len(MIGRATIONS) + 1, "a second run is a no-op"
        assert connection.execute("SELECT id, filename, priority FROM jobs").fetchall() == [(job.id, "old.wav", 0)]
        assert connection.execute("SELECT data FROM job_audio").fetchall() == [(b"kept across upgrades",)]
        assert connection.execute("SELECT COUNT(*) FROM api_keys").fetchall() == [(0,)]
    finally:
        connection.close()
    assert _version(path) == len(MIGRATIONS) + 1


async def test_a_failing_step_leaves_the_database_as_it_was(
    open_store: Any, make_request: MakeRequest, make_settings: Callable[..., Settings]
) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request(b"must survive"))
    await store.close()

    path = make_settings().database_path
    broken = MIGRATIONS + ("CREATE TABLE half_done (a INTEGER); INSERT INTO no_such_table VALUES (1)",)
    connection = sqlite3.connect(path, isolation_level="DEFERRED")
    try:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            migrate(connection, broken)
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half_done" not in tables, "the failed step must roll back entirely"
        # Once fixed, the same step applies cleanly.
        fixed = MIGRATIONS + ("CREATE TABLE half_done (a INTEGER)",)
        assert migrate(connection, fixed) == len(MIGRATIONS) + 1
    finally:
        connection.close()
    assert db_rows(path, "SELECT id FROM jobs") == [(job.id,)]


async def test_a_database_from_a_newer_version_is_refused_untouched(
    open_store: Any, make_request: MakeRequest, make_settings: Callable[..., Settings]
) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request(b"from the future"))
    await store.close()
    path = make_settings().database_path
    connection = sqlite3.connect(path)
    migrate(connection, MIGRATIONS + ("CREATE TABLE from_the_future (a INTEGER)",))
    connection.close()

    with pytest.raises(SchemaTooNew, match=f"schema version {len(MIGRATIONS) + 1}"):
        await open_store()
    assert _version(path) == len(MIGRATIONS) + 1
    assert db_rows(path, "SELECT id FROM jobs") == [(job.id,)]
    connection = sqlite3.connect(path)
    try:
        with pytest.raises(SchemaTooNew):
            migrate(connection)
    finally:
        connection.close()
