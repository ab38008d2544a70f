"""Fixtures of the job-queue tests: stores (a temp SQLite file, or a fresh schema on the session's
real PostgreSQL server) with a clock the test moves, the real bundled model loaded once, and
helpers to build requests, read tables and wait for jobs."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

from callpipe_asr.engines import ModelRegistry
from callpipe_asr.jobs import Job, JobRequest
from callpipe_asr.jobs.postgres_store import PostgresJobStore
from callpipe_asr.jobs.sqlite_store import SQLiteJobStore
from callpipe_asr.jobs.store import JobStore
from callpipe_asr.settings import Settings, load_settings
from callpipe_asr.transcript import RecognitionOptions


class FakeClock:
    """Unix time that only moves when the test says so (the store's injectable ``clock``)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


AnyStore = SQLiteJobStore | PostgresJobStore
StoreFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
def store_kind() -> str:
    """Which store :func:`open_store` opens: SQLite, except where a module parametrizes this
    fixture (the store suite runs over ``sqlite`` and ``postgresql``)."""
    return "sqlite"


@pytest.fixture
async def open_store(
    make_settings: Callable[..., Settings], store_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[StoreFactory]:
    """``await open_store(clock=..., jobs__max_queued=2, ...)``: an opened store, the same
    database on every call of one test: ``<tmp>/data/jobs.sqlite3`` (unless ``data_dir`` is
    given), or a schema of its own on the session's PostgreSQL server. Every store opened here
    is closed at teardown, and the schema dropped."""
    stores: list[AnyStore] = []
    server = request.getfixturevalue("postgres_server") if store_kind == "postgresql" else None
    schema, dsn = server.fresh_schema() if server else ("", "")

    async def build(clock: Callable[[], float] = time.time, **overrides: object) -> AnyStore:
        store: AnyStore
        if server:
            overrides.setdefault("jobs__store", dsn)
            store = PostgresJobStore(make_settings(**overrides), clock=clock)
        else:
            settings = make_settings(**overrides)
            store = SQLiteJobStore(settings.database_path, settings.jobs, clock=clock)
        stores.append(store)
        await store.open()
        return store

    yield build
    for store in stores:
        await store.close()
    if server:
        server.drop_schema(schema)


async def _table_rows(store: AnyStore, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query run straight against the store's database, past the store's code."""
    if isinstance(store, SQLiteJobStore):
        connection = sqlite3.connect(store._path)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()
    import psycopg

    async with await psycopg.AsyncConnection.connect(store._dsn) as connection:
        cursor = await connection.execute(sql)  # type: ignore[call-overload]
        return await cursor.fetchall()  # type: ignore[no-any-return]


@pytest.fixture
def table_rows() -> Callable[[AnyStore, str], Awaitable[list[tuple[Any, ...]]]]:
    """``await table_rows(store, "SELECT COUNT(*) FROM job_audio")``: what is really in the
    database, for either store."""
    return _table_rows


def _job_request(audio: bytes = b"audio bytes", **fields: Any) -> JobRequest:
    fields.setdefault("options", RecognitionOptions())
    return JobRequest(audio=audio, **fields)


@pytest.fixture
def make_request() -> Callable[..., JobRequest]:
    """``make_request(audio=..., owner=..., options=...)``: a :class:`JobRequest` as a dialect builds it."""
    return _job_request


async def _wait_until_final(store: JobStore, job_id: str, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await store.get(job_id)
        assert job is not None, f"job {job_id} vanished"
        if job.status.is_final:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status.value} after {timeout} s"
        await asyncio.sleep(0.02)


@pytest.fixture
def wait_final() -> Callable[..., Awaitable[Job]]:
    """``await wait_final(store, job_id, timeout=60)``: the job once it is done or failed."""
    return _wait_until_final


@pytest.fixture(scope="session")
def model_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(None, environ={}, overrides={"data_dir": tmp_path_factory.mktemp("model-data")})


@pytest.fixture(scope="session")
def registry(model_settings: Settings) -> Iterator[ModelRegistry]:
    """The real bundled Whisper tiny.en, loaded once for the session, for up to two threads."""
    registry = ModelRegistry(model_settings, concurrency=2)
    registry.get(model_settings.default_model)
    yield registry
    registry.close()
