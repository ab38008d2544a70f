"""Job administration (``callpipe-asr jobs``) on both real stores (SQLite and the session's
PostgreSQL): what each operation changes, what it refuses and why; and the command line around
it on an SQLite data directory. (Under a running server: ``tests/e2e/test_admin_backup.py``.)"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from callpipe_asr.jobs import JobStatus
from callpipe_asr.jobs import admin
from callpipe_asr.jobs.admin import AdminError
from callpipe_asr.settings import Settings
from callpipe_asr.transcript import Segment, Transcript

DAY = 86_400.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store-level test runs on both stores (the command-line tests pin ``sqlite``)."""
    return str(request.param)


def transcript(text: str) -> Transcript:
    return Transcript(segments=(Segment(text=" " + text, start=0.0, end=1.0),), language="en", duration=1.0)


async def failed_job(store: Any, make_request: Callable[..., Any], audio: bytes, reason: str = "boom") -> str:
    job, _ = await store.submit(make_request(audio=audio, filename="msg.wav"))
    claimed = await store.claim()
    assert claimed.job.id == job.id
    assert await store.fail(job.id, claimed.token, reason, "corrupt_audio")
    return str(job.id)


async def test_list_filters_by_status_age_and_limit(open_store: Any, make_request: Any, clock: Any) -> None:
    store = await open_store(clock=clock)
    old, _ = await store.submit(make_request(audio=b"old"))
    claimed = await store.claim()
    assert await store.finish(old.id, claimed.token, transcript("old news"))
    clock.advance(2 * DAY)
    failed = await failed_job(store, make_request, b"failed")
    queued, _ = await store.submit(make_request(audio=b"queued"))

    newest_first = [job.id for job in await admin.list_jobs(store, None, None, 10)]
    assert newest_first == [queued.id, failed, old.id]
    assert [job.id for job in await admin.list_jobs(store, JobStatus.FAILED, None, 10)] == [failed]
    since = admin.parse_moment("1d", clock.now)
    assert [job.id for job in await admin.list_jobs(store, None, since, 10)] == [queued.id, failed]
    assert [job.id for job in await admin.list_jobs(store, JobStatus.QUEUED, None, 1)] == [queued.id]
    with pytest.raises(AdminError, match="--limit"):
        await admin.list_jobs(store, None, None, 0)


async def test_show_hides_the_transcript_unless_asked(open_store: Any, make_request: Any) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request(audio=b"a", filename="msg\x1b[31m.wav"))
    claimed = await store.claim()
    assert await store.finish(job.id, claimed.token, transcript("call me back about the invoice"))
    done = await admin.find_job(store, job.id)

    plain = admin.format_details(done, 0, with_text=False)
    assert "status:" in plain and "done" in plain and "attempts:" in plain and "ran" in plain
    assert "invoice" not in plain
    assert "\x1b" not in plain and "msg\\x1b[31m.wav" in plain, "control characters are shown, never sent"
    assert "invoice" in admin.format_details(done, 0, with_text=True)
    assert "text" not in admin.job_record(done)
    assert admin.job_record(done, with_text=True)["text"] == "call me back about the invoice"
    with pytest.raises(AdminError, match="no job with id 'nope'"):
        await admin.find_job(store, "nope")


async def test_retry_requeues_a_failed_job_whose_audio_is_kept(open_store: Any, make_request: Any, table_rows: Any) -> None:
    store = await open_store(jobs__keep_audio=True)
    job_id = await failed_job(store, make_request, b"kept audio")

    retried = await admin.retry_job(store, job_id)
    assert retried.status is JobStatus.QUEUED
    assert (retried.attempts, retried.error, retried.error_code, retried.finished_at, retried.expires_at) == (0, None, None, None, None)
    claimed = await store.claim()
    assert claimed.job.id == job_id and claimed.audio == b"kept audio" and claimed.job.attempts == 1
    assert await table_rows(store, "SELECT COUNT(*) FROM jobs") == [(1,)], "the same job again, not a copy"


async def test_retry_refuses_without_audio_or_when_not_failed(open_store: Any, make_request: Any) -> None:
    store = await open_store(jobs__keep_audio=False)
    job_id = await failed_job(store, make_request, b"gone")
    with pytest.raises(AdminError, match="audio was deleted .* send the recording again"):
        await admin.retry_job(store, job_id)
    assert (await store.get(job_id)).status is JobStatus.FAILED, "unchanged"

    queued, _ = await store.submit(make_request(audio=b"waiting"))
    with pytest.raises(AdminError, match="is queued; only failed jobs can be retried"):
        await admin.retry_job(store, queued.id)


async def test_cancel_ends_a_queued_job_failed_with_the_reason(open_store: Any, make_request: Any, table_rows: Any) -> None:
    store = await open_store()
    running, _ = await store.submit(make_request(audio=b"first"))
    queued, _ = await store.submit(make_request(audio=b"second", callback_url="https://example.com/hook"))
    assert (await store.claim()).job.id == running.id

    cancelled = await admin.cancel_job(store, queued.id)
    assert cancelled.status is JobStatus.FAILED
    assert (cancelled.error, cancelled.error_code) == ("cancelled by the administrator", "cancelled")
    assert cancelled.finished_at is not None and cancelled.expires_at is not None
    assert cancelled.callback_status == "pending", "the caller's callback hears of it"
    assert await table_rows(store, f"SELECT COUNT(*) FROM job_audio WHERE job_id = '{queued.id}'") == [(0,)]
    assert await store.claim() is None, "a worker never picks it up"

    with pytest.raises(AdminError, match="is running; only queued jobs can be cancelled"):
        await admin.cancel_job(store, running.id)


async def test_purge_removes_expired_and_optionally_all_finished_before(open_store: Any, make_request: Any, clock: Any) -> None:
    store = await open_store(clock=clock, jobs__retention_days=30)
    expired = await failed_job(store, make_request, b"expired")
    clock.advance(31 * DAY)
    older = await failed_job(store, make_request, b"older")
    clock.advance(5 * DAY)
    recent = await failed_job(store, make_request, b"recent")
    queued, _ = await store.submit(make_request(audio=b"queued"))

    assert await admin.purge(store, None) == admin.PurgeResult(expired=1, finished_before=0)
    assert await store.get(expired) is None and await store.get(older) is not None
    result = await admin.purge(store, admin.parse_moment("2d", clock.now))
    assert result == admin.PurgeResult(expired=0, finished_before=1)
    remaining = {job.id for job in await admin.list_jobs(store, None, None, 10)}
    assert remaining == {recent, queued.id}, "unfinished jobs are never purged"


def test_moments_are_dates_or_ages() -> None:
    now = 1_700_000_000.0
    assert admin.parse_moment("36h", now) == now - 36 * 3600
    assert admin.parse_moment("2w", now) == now - 14 * DAY
    assert admin.parse_moment("2023-11-14T22:13:20+00:00", now) == now
    assert admin.parse_moment("2023-11-14", now) < now
    with pytest.raises(AdminError, match="neither a date"):
        admin.parse_moment("yesterday", now)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callpipe_asr", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_the_command_line_lists_shows_retries_and_cancels(
    open_store: Any, make_request: Any, make_settings: Callable[..., Settings], store_kind: str
) -> None:
    settings = make_settings(jobs__keep_audio=True)
    store = await open_store(jobs__keep_audio=True)
    failed = await failed_job(store, make_request, b"x", reason="the audio cannot be decoded")
    queued, _ = await store.submit(make_request(audio=b"y", filename="<b>odd</b>.wav"))
    data = ["--data-dir", str(settings.data_dir)]

    listing = run_cli("jobs", "list", *data)
    assert listing.returncode == 0, listing.stderr
    assert failed in listing.stdout and queued.id in listing.stdout and "the audio cannot be decoded" in listing.stdout
    lines = run_cli("jobs", "list", "--status", "failed", "--json", *data).stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [failed]
    shown = json.loads(run_cli("jobs", "show", "--json", *data, "--", failed).stdout)
    assert shown["error"] == {"code": "corrupt_audio", "message": "the audio cannot be decoded"} and shown["audio_kept"]

    # Ids are URL-safe base64 and may start with '-': after '--' they are never taken for options.
    assert run_cli("jobs", "retry", *data, "--", failed).returncode == 0
    cancel = run_cli("jobs", "cancel", *data, "--", queued.id)
    assert cancel.returncode == 0 and "cancelled" in cancel.stdout
    refused = run_cli("jobs", "cancel", *data, "--", queued.id)
    assert refused.returncode == 1 and "only queued jobs can be cancelled" in refused.stderr
    assert (await store.get(failed)).status is JobStatus.QUEUED
    assert (await store.get(queued.id)).error == "cancelled by the administrator"


def test_a_missing_database_is_refused_not_created(tmp_path: Path) -> None:
    result = run_cli("jobs", "list", "--data-dir", str(tmp_path / "typo"))
    assert result.returncode == 1 and "no job database" in result.stderr
    assert not (tmp_path / "typo").exists()


async def test_run_checks_arguments_before_opening_the_store(make_settings: Callable[..., Settings]) -> None:
    args = argparse.Namespace(jobs_command="purge", all_finished_before="someday")
    with pytest.raises(AdminError, match="neither a date"):
        await admin.run(make_settings(), args, io.StringIO())
