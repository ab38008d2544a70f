"""The SQLite store under outside trouble: a full disk and a lock held by another process become
the client's clean 503 (``storage_full``, ``store_busy``) with nothing half-stored, and the
free-space reserve keeps room for the jobs already accepted. (The same against a real server:
``tests/e2e/test_faults.py``.)"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from callpipe_asr.errors import StorageFull, StoreBusy

TMPFS_BYTES = 2 * 1024 * 1024


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=False)


async def test_a_full_disk_is_storage_full_and_stores_nothing(
    open_store: Any, make_request: Callable[..., Any], tiny_disk: Path, table_rows: Any
) -> None:
    store = await open_store(data_dir=tiny_disk / "data", jobs__min_free_disk_bytes=0, jobs__max_queued=1000)
    accepted = 0
    with pytest.raises(StorageFull, match="disk is full"):
        for index in range(100):
            await store.submit(make_request(audio=bytes([index]) * 100_000))
            accepted += 1
    assert accepted > 0
    assert await table_rows(store, "SELECT COUNT(*) FROM jobs") == [(accepted,)]
    assert await store.ping()


async def test_the_reserve_refuses_work_before_the_disk_fills(
    open_store: Any, make_request: Callable[..., Any], tiny_disk: Path
) -> None:
    store = await open_store(data_dir=tiny_disk / "data", jobs__min_free_disk_bytes=TMPFS_BYTES // 2, jobs__max_queued=1000)
    with pytest.raises(StorageFull, match="nearly full"):
        for index in range(100):
            await store.submit(make_request(audio=bytes([index]) * 100_000))
    claimed = await store.claim()
    assert claimed is not None and await store.fail(claimed.job.id, claimed.token, "x", "x"), "accepted work can still end"


async def test_a_lock_held_past_the_busy_timeout_is_store_busy(open_store: Any, make_request: Callable[..., Any], table_rows: Any) -> None:
    store = await open_store()
    store._db.execute("PRAGMA busy_timeout=200")  # the test's patience, not the server's 10 s
    other = sqlite3.connect(store._path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreBusy):
            await store.submit(make_request(audio=b"while locked"))
        assert await store.ping(), "reads go on (WAL)"
        other.execute("ROLLBACK")
    finally:
        other.close()
    job, created = await store.submit(make_request(audio=b"while locked"))
    assert created and await table_rows(store, "SELECT COUNT(*) FROM jobs") == [(1,)]
