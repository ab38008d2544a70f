"""Job administration: ``callpipe-asr jobs list|show|retry|cancel|purge``.

For the PBX admin whose voicemail transcript did not arrive: find the job, see why it failed, run
it again while its audio is still kept, cancel work nobody wants any more, and clear old jobs.
It works on the data directory of a running or a stopped server through the same store code the
server uses; every operation is one short transaction, so a running server is never blocked for
longer than a single write (and SQLite's busy timeout makes either side wait, not fail). A running
server notices requeued work within ``jobs.poll_interval_seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, TextIO

from ..settings import Settings
from .model import Job, JobStatus
from .store import JobStore, open_store

CANCEL_REASON = "cancelled by the administrator"
CANCEL_CODE = "cancelled"
LIST_DEFAULT_LIMIT = 50
RELATIVE_UNITS = {"m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 7 * 86_400.0}
RELATIVE_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
ERROR_COLUMN_CHARS = 60
DASH_ID_HINT = "a JOB_ID that starts with '-' goes after '--': jobs show -- -Hd8hfx..."


class AdminError(Exception):
    """Something the administrator asked that cannot be done; the message says why (exit 1)."""


@dataclass(frozen=True)
class PurgeResult:
    expired: int
    """Jobs past their retention (what the server's own purge removes)."""
    finished_before: int
    """Further done or failed jobs that ended before the date given."""


# -- opening ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened_store(settings: Settings) -> AsyncIterator[JobStore]:
    """The server's store, opened as the server opens it; an SQLite database that does not exist
    is refused rather than created (a mistyped ``--data-dir`` must not look like an empty queue)."""
    if not settings.uses_shared_store and not settings.database_path.is_file():
        raise AdminError(f"no job database at {settings.database_path} (is --data-dir or --config right?)")
    store = open_store(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# -- the operations ---------------------------------------------------------------------------


async def list_jobs(store: JobStore, status: JobStatus | None, since: float | None, limit: int) -> list[Job]:
    if limit < 1:
        raise AdminError("--limit must be at least 1")
    return await store.find_jobs(status, since, limit)


async def find_job(store: JobStore, job_id: str) -> Job:
    job = await store.get(job_id)
    if job is None:
        raise AdminError(f"no job with id '{job_id}' (it may have expired or been deleted)")
    return job


async def retry_job(store: JobStore, job_id: str) -> Job:
    """Requeue a failed job with its attempts reset; refuse, saying why, when that cannot work."""
    job = await find_job(store, job_id)
    if job.status is not JobStatus.FAILED:
        raise AdminError(f"job {job_id} is {job.status.value}; only failed jobs can be retried")
    if not job.has_audio:
        raise AdminError(
            f"job {job_id} cannot run again: its audio was deleted when it ended (jobs.keep_audio is off, "
            "or the job was purged); the caller must send the recording again"
        )
    if not await store.retry_failed(job_id):
        raise AdminError(f"job {job_id} changed while it was being retried; look at it again")
    return await find_job(store, job_id)


async def cancel_job(store: JobStore, job_id: str) -> Job:
    """End a queued job as failed with :data:`CANCEL_REASON` (a running job is left to finish)."""
    job = await find_job(store, job_id)
    if job.status is not JobStatus.QUEUED:
        raise AdminError(f"job {job_id} is {job.status.value}; only queued jobs can be cancelled")
    if not await store.cancel_queued(job_id, CANCEL_REASON, CANCEL_CODE):
        raise AdminError(f"job {job_id} was claimed by a worker meanwhile; it runs to its end")
    return await find_job(store, job_id)


async def purge(store: JobStore, finished_before: float | None) -> PurgeResult:
    expired = await store.purge_expired()
    older = await store.purge_finished_before(finished_before) if finished_before is not None else 0
    return PurgeResult(expired=expired, finished_before=older)


# -- parsing ----------------------------------------------------------------------------------


def parse_moment(text: str, now: float) -> float:
    """Unix time from ``2024-05-01``, ``2024-05-01T13:30`` (local time unless an offset is
    given) or an age such as ``90m``, ``36h``, ``7d``, ``2w`` (that long before ``now``)."""
    relative = RELATIVE_TIME.match(text)
    if relative:
        return now - float(relative.group(1)) * RELATIVE_UNITS[relative.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise AdminError(f"'{text}' is neither a date (2024-05-01, 2024-05-01T13:30) nor an age (36h, 7d)") from exc
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: the administrator's local time
    return moment.timestamp()


def parse_status(text: str | None) -> JobStatus | None:
    if text is None:
        return None
    try:
        return JobStatus(text)
    except ValueError as exc:
        raise AdminError(f"unknown status '{text}' (use {', '.join(s.value for s in JobStatus)})") from exc


# -- rendering --------------------------------------------------------------------------------


def printable(text: str | None) -> str:
    """``text`` safe for a terminal: control characters (escape sequences an uploader could put
    in a file name) shown as ``\\x1b``-style escapes, never interpreted."""
    if text is None:
        return "-"
    return "".join(
        char if unicodedata.category(char)[0] != "C" else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def local_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def job_record(job: Job, with_text: bool = False) -> dict[str, Any]:
    """The job for ``--json``: everything but the transcript text unless asked for."""
    record: dict[str, Any] = {
        "id": job.id,
        "status": job.status.value,
        "dialect": job.dialect,
        "owner": job.owner,
        "filename": job.filename,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "expires_at": job.expires_at,
        "attempts": job.attempts,
        "audio_duration": job.audio_duration,
        "audio_kept": job.has_audio,
        "error": {"code": job.error_code, "message": job.error} if job.error or job.error_code else None,
        "callback_status": job.callback_status,
        "model": job.options.model,
        "language": job.options.language,
    }
    if with_text:
        record["text"] = job.transcript.text if job.transcript else None
    return record


def format_table(jobs: list[Job]) -> str:
    """One line per job, newest first; an error is cut to fit a line (``show`` has all of it)."""
    header = f"{'ID':<22}  {'STATUS':<7}  {'CREATED':<25}  {'DIALECT':<10}  {'SECONDS':>7}  {'TRIES':>5}  FILE / ERROR"
    lines = [header]
    for job in jobs:
        seconds = f"{job.audio_duration:.1f}" if job.audio_duration is not None else "-"
        detail = printable(job.filename)
        if job.error:
            error = printable(job.error)
            cut = error if len(error) <= ERROR_COLUMN_CHARS else error[: ERROR_COLUMN_CHARS - 1] + "…"
            detail = f"{detail}: {cut}"
        lines.append(
            f"{job.id:<22}  {job.status.value:<7}  {local_time(job.created_at):<25}  {printable(job.dialect):<10}  "
            f"{seconds:>7}  {job.attempts:>5}  {detail}"
        )
    return "\n".join(lines)


def format_details(job: Job, callback_attempts: int, with_text: bool) -> str:
    """``show``: state, error, timings and attempts; the transcript only with ``--text``."""
    waited = _span(job.created_at, job.started_at)
    ran = _span(job.started_at, job.finished_at)
    rows = [
        ("id", job.id),
        ("status", job.status.value),
        ("error", f"{job.error_code}: {printable(job.error)}" if job.error or job.error_code else "-"),
        ("dialect", printable(job.dialect)),
        ("owner", printable(job.owner)),
        ("file", printable(job.filename)),
        ("audio", f"{job.audio_duration:.1f} s" if job.audio_duration is not None else "-"),
        ("audio kept", "yes" if job.has_audio else "no"),
        ("model", printable(job.options.model or "(default)")),
        ("language", printable(job.options.language or "(detect)")),
        ("attempts", str(job.attempts)),
        ("created", local_time(job.created_at)),
        ("started", local_time(job.started_at) + (f"  (waited {waited})" if waited else "")),
        ("finished", local_time(job.finished_at) + (f"  (ran {ran})" if ran else "")),
        ("expires", local_time(job.expires_at)),
        ("callback", f"{job.callback_status} after {callback_attempts} attempt(s)" if job.callback_status else "-"),
    ]
    if with_text:
        rows.append(("text", printable(job.transcript.text) if job.transcript else "-"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in rows)


def _span(start: float | None, end: float | None) -> str | None:
    if start is None or end is None:
        return None
    seconds = max(0.0, end - start)
    return f"{seconds:.1f} s" if seconds < 60 else str(timedelta(seconds=round(seconds)))


# -- the command ------------------------------------------------------------------------------


def add_arguments(jobs: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """The ``jobs`` subcommands, each with the ``common`` flags (``--data-dir``, ``--config``)
    after its own name, where an administrator types them."""
    commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="{list,show,retry,cancel,purge}")
    listing = commands.add_parser("list", parents=[common], help="the newest jobs, with filters")
    listing.add_argument("--status", choices=[s.value for s in JobStatus])
    listing.add_argument("--since", help="created at or after: 2024-05-01, 2024-05-01T13:30, or an age (36h, 7d)")
    listing.add_argument("--limit", type=int, default=LIST_DEFAULT_LIMIT, help=f"at most this many (default {LIST_DEFAULT_LIMIT})")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", parents=[common], help="one job: state, error, timings, attempts")
    show.add_argument("job_id", metavar="JOB_ID", help=DASH_ID_HINT)
    show.add_argument("--text", action="store_true", help="also print the transcript")
    show.add_argument("--json", action="store_true")
    retry = commands.add_parser("retry", parents=[common], help="queue a failed job again (its audio must still be kept)")
    retry.add_argument("job_id", metavar="JOB_ID", help=DASH_ID_HINT)
    cancel = commands.add_parser("cancel", parents=[common], help=f"end a queued job as failed ('{CANCEL_REASON}')")
    cancel.add_argument("job_id", metavar="JOB_ID", help=DASH_ID_HINT)
    purging = commands.add_parser("purge", parents=[common], help="delete expired jobs now, and optionally older finished ones")
    purging.add_argument("--all-finished-before", metavar="DATE", help="also every done or failed job that ended before DATE (or an age: 90d)")


async def run(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Carry out one ``jobs`` subcommand; :class:`AdminError` says why one could not be.
    Arguments are checked before the store is opened, so a typo touches nothing."""
    now = time.time()
    command: str = args.jobs_command
    status = parse_status(getattr(args, "status", None))
    since = parse_moment(args.since, now) if getattr(args, "since", None) else None
    before = parse_moment(args.all_finished_before, now) if getattr(args, "all_finished_before", None) else None
    async with opened_store(settings) as store:
        if command == "list":
            jobs = await list_jobs(store, status, since, args.limit)
            if args.json:
                out.writelines(json.dumps(job_record(job), ensure_ascii=False) + "\n" for job in jobs)
            else:
                print(format_table(jobs), file=out)
        elif command == "show":
            job = await find_job(store, args.job_id)
            if args.json:
                print(json.dumps(job_record(job, args.text), ensure_ascii=False, indent=2), file=out)
            else:
                print(format_details(job, await store.callback_attempts(job.id), args.text), file=out)
        elif command == "retry":
            job = await retry_job(store, args.job_id)
            print(f"job {job.id} is queued again (attempts reset)", file=out)
        elif command == "cancel":
            job = await cancel_job(store, args.job_id)
            print(f"job {job.id} cancelled: it ended failed ({CANCEL_REASON})", file=out)
        elif command == "purge":
            result = await purge(store, before)
            print(f"purged {result.expired} expired job(s)", file=out)
            if before is not None:
                print(f"purged {result.finished_before} job(s) finished before {local_time(before)}", file=out)
        else:  # argparse only lets the names above through
            raise AdminError(f"unknown jobs command '{command}'")
    return 0
