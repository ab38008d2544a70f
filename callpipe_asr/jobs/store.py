"""The job store interface: what the service and workers need from any store.

SQLite (:mod:`.sqlite_store`) is the embedded default; PostgreSQL (:mod:`.postgres_store`) is
shared by API and worker processes on several machines, implements the same protocol and adds
what :class:`SharedJobStore` names.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from ..settings import ConfigError, Settings
from ..transcript import Transcript
from .events import JobEvents
from .model import ClaimedJob, Job, JobRequest, JobStatus, QueueStats


class JobStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def submit(self, request: JobRequest) -> tuple[Job, bool]: ...
    async def claim(self) -> ClaimedJob | None: ...
    async def finish(self, job_id: str, token: str, transcript: Transcript) -> bool: ...
    async def fail(self, job_id: str, token: str, reason: str, code: str) -> bool: ...
    async def release(self, job_id: str, token: str) -> bool: ...
    async def recover(self) -> tuple[int, int]: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def audio(self, job_id: str) -> bytes | None: ...
    async def queue_position(self, job_id: str) -> int | None: ...
    async def stats(self) -> QueueStats: ...
    async def delete(self, job_id: str) -> bool: ...
    async def purge_expired(self) -> int: ...
    async def list_jobs(self, owner: str | None, dialect: str, limit: int = 100) -> list[Job]: ...
    async def due_callbacks(self, limit: int = 20) -> list[Job]: ...
    async def record_callback(self, job_id: str, delivered: bool, retry_in_seconds: float | None) -> None: ...
    async def callback_attempts(self, job_id: str) -> int: ...
    # Administration (``callpipe-asr jobs``, see :mod:`.admin`); docstrings in :mod:`.sqlite_store`.
    async def find_jobs(self, status: JobStatus | None = None, since: float | None = None, limit: int = 100) -> list[Job]: ...
    async def retry_failed(self, job_id: str) -> bool: ...
    async def cancel_queued(self, job_id: str, reason: str, code: str) -> bool: ...
    async def purge_finished_before(self, cutoff: float) -> int: ...


@runtime_checkable
class SharedJobStore(Protocol):
    """What a store several processes share has besides :class:`JobStore`: claims carry leases
    kept alive by a heartbeat, workers say which models they serve, and wake-ups travel between
    processes; the code above the store stays the same otherwise. (Only these methods, so the
    ``isinstance`` test that switches them on never depends on the rest of the protocol.)"""

    async def start_background(self, events: JobEvents) -> None:
        """Relay other processes' wake-ups into ``events`` and keep the shared state tidy
        (expired leases, jobs no worker serves) until the store closes."""
        ...

    async def register_worker(self, models: Sequence[str], slots: int) -> None:
        """Claim only jobs for ``models`` from now on, and heartbeat until the store closes."""
        ...

    async def migrate(self) -> int:
        """Apply pending schema migrations without opening the store; return the version."""
        ...


def open_store(settings: Settings) -> JobStore:
    """The store the settings name (not yet opened)."""
    if settings.uses_shared_store:
        try:
            from .postgres_store import PostgresJobStore
        except ImportError as exc:
            raise ConfigError(
                "jobs.store names PostgreSQL, which needs psycopg: pip install 'callpipe-asr[postgres]'"
            ) from exc
        return PostgresJobStore(settings)
    from .sqlite_store import SQLiteJobStore

    return SQLiteJobStore(settings.database_path, settings.jobs)


async def migrate_store(settings: Settings) -> int:
    """Apply the schema migrations the store lacks (a store migrates when it opens); return the
    schema version it now has."""
    store = open_store(settings)
    if isinstance(store, SharedJobStore):
        return await store.migrate()
    from .sqlite_store import MIGRATIONS

    await store.open()
    await store.close()
    return len(MIGRATIONS)
