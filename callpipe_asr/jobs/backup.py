"""``callpipe-asr backup DEST``: a consistent copy of the job database while the server runs.

Copying ``jobs.sqlite3`` with ``cp`` while the server writes can catch a half-written page, and
leaves out whatever still sits in the ``-wal`` file. SQLite's online backup API copies one
consistent snapshot instead. It copies in a single step: the database is in WAL mode, where a
reader never blocks the server's writers, whereas a step-by-step backup restarts whenever another
connection writes between steps and, under steady load, might never finish.

The copy is written beside its destination, checked (``PRAGMA quick_check``), switched out of WAL
mode so it is one self-contained file, and only then renamed into place: an interrupted backup
never replaces a good one. Restoring is copying it back while the server is stopped (README,
"Backup and restore").
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT_MS = 30_000


class BackupError(Exception):
    """The backup could not be made; the message says why (nothing was replaced)."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    jobs: int
    bytes: int
    seconds: float


def backup_path(destination: Path, now: float) -> Path:
    """``destination`` itself, or a timestamped file inside it when it is a directory (so a
    nightly ``backup /var/backups/callpipe-asr/`` keeps every night's copy)."""
    if destination.is_dir():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
        return destination / f"jobs-{stamp}.sqlite3"
    return destination


def backup_database(source: Path, destination: Path) -> BackupResult:
    """Copy the job database at ``source`` to ``destination`` (a file, or a directory to put a
    timestamped file in); return what was written."""
    if not source.is_file():
        raise BackupError(f"no job database at {source} (is --data-dir or --config right?)")
    started = time.monotonic()
    target = backup_path(destination, time.time())
    if not target.parent.is_dir():
        raise BackupError(f"the directory {target.parent} does not exist")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        _copy(source, partial)
        jobs = _check(partial)
        os.replace(partial, target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"the backup failed: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupResult(path=target, jobs=jobs, bytes=target.stat().st_size, seconds=time.monotonic() - started)


def _copy(source: Path, partial: Path) -> None:
    # mode=rw: never create an empty database where the source should be.
    origin = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        origin.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        copy = sqlite3.connect(partial)
        try:
            origin.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            copy.close()
    finally:
        origin.close()


def _check(path: Path) -> int:
    """Verify the copy's structure; return how many jobs it holds."""
    connection = sqlite3.connect(path)
    try:
        verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"the copy failed its integrity check: {verdict}")
        return int(connection.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    finally:
        connection.close()
