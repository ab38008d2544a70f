"""Every job store on its own, one suite for both: the claim protocol, dedupe, the queue caps,
crash recovery, retention, listing, per-key job counts (and the service's concurrent-job limit
on top of them). Each test runs against SQLite (a temp file) and against a real PostgreSQL
server (a fresh schema). No model; the audio is a real prompt's bytes where the bytes themselves
are checked. What only one store has: ``test_sqlite_store.py`` (the file:
durability and schema upgrades) and ``test_postgres_store.py`` (leases, fencing across
processes, models, notifications)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from callpipe_asr.aio import cancel_and_wait
from callpipe_asr.access import owner_id
from callpipe_asr.errors import QueueFull, TooManyJobs
from callpipe_asr.jobs import JobRequest, JobStatus
from callpipe_asr.jobs.events import JobEvents
from callpipe_asr.jobs.retention import purge_forever
from callpipe_asr.jobs.service import JobService, QueueInsight
from callpipe_asr.jobs.sqlite_store import MAX_RETRY_AFTER_SECONDS
from callpipe_asr.settings import Settings
from callpipe_asr.transcript import AudioHints, RecognitionOptions, Segment, Transcript

DAY = 86_400.0
LEASE = 30.0
"""``jobs.lease_seconds``'s default: after it a dead worker's claim is orphaned on PostgreSQL (on
SQLite every running job is orphaned at start-up, so waiting it out changes nothing there)."""

MakeRequest = Callable[..., JobRequest]


def transcript(text: str = "hello world") -> Transcript:
    return Transcript(segments=(Segment(text=" " + text, start=0.0, end=1.5),), language="en", duration=1.5, model="tiny.en")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every test here runs once per store."""
    return str(request.param)


# -- the round trip ---------------------------------------------------------------------------------


async def test_submit_claim_finish_round_trip_keeps_audio_until_the_job_ends(
    open_store: Any, table_rows: Any, make_request: MakeRequest, clock: Any, prompt: Any
) -> None:
    store = await open_store(clock=clock, jobs__retention_days=3)
    job, created = await store.submit(make_request(prompt.audio, filename="call.wav", owner="key-1", audio_duration=5.5))
    assert created
    assert job.status is JobStatus.QUEUED
    assert (job.filename, job.owner, job.audio_duration, job.attempts) == ("call.wav", "key-1", 5.5, 0)
    assert job.has_audio and await store.audio(job.id) == prompt.audio
    assert job.created_at == clock.now and job.started_at is None and job.expires_at is None

    clock.advance(2)
    claimed = await store.claim()
    assert claimed is not None
    assert claimed.job.id == job.id and claimed.audio == prompt.audio and claimed.token
    assert claimed.job.status is JobStatus.RUNNING and claimed.job.attempts == 1
    assert claimed.job.started_at == clock.now

    clock.advance(3)
    assert await store.finish(job.id, claimed.token, transcript("already logged on"))
    done = await store.get(job.id)
    assert done is not None
    assert done.status is JobStatus.DONE
    assert done.transcript == transcript("already logged on")
    assert done.finished_at == clock.now
    assert done.expires_at == pytest.approx(clock.now + 3 * DAY)
    assert done.error is None
    assert not done.has_audio and await store.audio(job.id) is None, "audio must go when its job ends"
    assert await table_rows(store, "SELECT COUNT(*) FROM job_audio") == [(0,)]


async def test_a_failed_job_keeps_its_reason_and_loses_its_audio(open_store: Any, make_request: MakeRequest) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request(b"bytes that are not audio"))
    claimed = await store.claim()
    assert claimed is not None
    assert await store.fail(job.id, claimed.token, "not a recognised audio format", "unsupported_audio")
    failed = await store.get(job.id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert (failed.error, failed.error_code) == ("not a recognised audio format", "unsupported_audio")
    assert failed.transcript is None and failed.finished_at is not None and failed.expires_at is not None
    assert not failed.has_audio and await store.audio(job.id) is None


async def test_keep_audio_keeps_it_until_the_transcript_expires(
    open_store: Any, table_rows: Any, make_request: MakeRequest, clock: Any, prompt: Any
) -> None:
    store = await open_store(clock=clock, jobs__keep_audio=True, jobs__retention_days=1)
    job, _ = await store.submit(make_request(prompt.audio))
    claimed = await store.claim()
    assert claimed is not None
    assert await store.finish(job.id, claimed.token, transcript())
    done = await store.get(job.id)
    assert done is not None and done.status is JobStatus.DONE
    assert done.has_audio and await store.audio(job.id) == prompt.audio

    clock.advance(DAY + 1)
    assert await store.purge_expired() == 1
    assert await store.get(job.id) is None and await store.audio(job.id) is None
    assert await table_rows(store, "SELECT COUNT(*) FROM job_audio") == [(0,)]


async def test_claims_are_first_in_first_out(open_store: Any, make_request: MakeRequest, clock: Any) -> None:
    store = await open_store(clock=clock)
    ids = []
    for n in range(4):
        job, _ = await store.submit(make_request(f"audio {n}".encode()))
        ids.append(job.id)
    claimed = []
    for _ in ids:
        job = await store.claim()
        assert job is not None
        claimed.append(job)
    assert [c.job.id for c in claimed] == ids
    assert [c.audio for c in claimed] == [f"audio {n}".encode() for n in range(4)]
    assert len({c.token for c in claimed}) == 4
    assert await store.claim() is None


async def test_a_result_counts_only_with_the_current_token_and_only_once(
    open_store: Any, make_request: MakeRequest
) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request())
    claimed = await store.claim()
    assert claimed is not None

    assert not await store.finish(job.id, "stale-token", transcript("wrong"))
    assert not await store.fail(job.id, "stale-token", "wrong", "internal_error")
    still = await store.get(job.id)
    assert still is not None and still.status is JobStatus.RUNNING and still.transcript is None

    assert await store.finish(job.id, claimed.token, transcript("first"))
    assert not await store.finish(job.id, claimed.token, transcript("second")), "a result is stored exactly once"
    assert not await store.fail(job.id, claimed.token, "late failure", "internal_error")
    done = await store.get(job.id)
    assert done is not None
    assert done.status is JobStatus.DONE and done.transcript == transcript("first") and done.error is None


async def test_a_token_from_before_a_release_is_stale(open_store: Any, make_request: MakeRequest) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request())
    first = await store.claim()
    assert first is not None
    assert await store.release(job.id, first.token)
    second = await store.claim()
    assert second is not None and second.job.id == job.id and second.token != first.token
    assert not await store.finish(job.id, first.token, transcript("old worker"))
    assert await store.finish(job.id, second.token, transcript("new worker"))
    done = await store.get(job.id)
    assert done is not None and done.transcript == transcript("new worker")


async def test_release_gives_the_job_back_without_counting_the_attempt(
    open_store: Any, make_request: MakeRequest
) -> None:
    store = await open_store(jobs__max_attempts=1)
    job, _ = await store.submit(make_request())
    claimed = await store.claim()
    assert claimed is not None and claimed.job.attempts == 1
    assert not await store.release(job.id, "someone-else")
    assert await store.release(job.id, claimed.token)
    released = await store.get(job.id)
    assert released is not None
    assert released.status is JobStatus.QUEUED and released.attempts == 0 and released.started_at is None
    assert released.has_audio
    assert not await store.release(job.id, claimed.token), "released once"

    # Released (clean shutdown) as often as you like: never counted as a crash.
    for _ in range(3):
        again = await store.claim()
        assert again is not None and again.job.attempts == 1
        assert await store.release(job.id, again.token)
    assert await store.recover() == (0, 0)
    assert (await store.get(job.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]


async def test_a_deleted_job_is_gone_and_its_worker_result_is_discarded(
    open_store: Any, table_rows: Any, make_request: MakeRequest
) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request())
    claimed = await store.claim()
    assert claimed is not None
    assert await store.delete(job.id)
    assert await store.get(job.id) is None and await store.audio(job.id) is None
    assert not await store.finish(job.id, claimed.token, transcript())
    assert await store.get(job.id) is None
    assert not await store.delete(job.id)
    assert not await store.delete("no-such-job")
    assert await table_rows(store, "SELECT COUNT(*) FROM jobs") == [(0,)]
    assert await table_rows(store, "SELECT COUNT(*) FROM job_audio") == [(0,)]


# -- duplicates -------------------------------------------------------------------------------------


async def _bring_to(store: Any, status: JobStatus, job_id: str) -> None:
    if status is JobStatus.QUEUED:
        return
    claimed = await store.claim()
    assert claimed is not None and claimed.job.id == job_id
    if status is JobStatus.DONE:
        assert await store.finish(job_id, claimed.token, transcript())
    elif status is JobStatus.FAILED:
        assert await store.fail(job_id, claimed.token, "could not decode", "corrupt_audio")


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE])
async def test_a_duplicate_attaches_to_a_queued_running_or_finished_job(
    open_store: Any, table_rows: Any, make_request: MakeRequest, clock: Any, status: JobStatus
) -> None:
    # The running job's claim must outlast the wait, as a live worker's heartbeat keeps it.
    store = await open_store(clock=clock, jobs__duplicate_window_seconds=600, jobs__lease_seconds=3600)
    request = make_request(b"the same call", owner="key-1", options=RecognitionOptions(language="en"))
    job, created = await store.submit(request)
    assert created
    await _bring_to(store, status, job.id)
    clock.advance(599)
    again, created_again = await store.submit(make_request(b"the same call", owner="key-1", options=RecognitionOptions(language="en")))
    assert not created_again
    assert again.id == job.id and again.status is status
    assert await table_rows(store, "SELECT COUNT(*) FROM jobs") == [(1,)]
    assert await table_rows(store, "SELECT COUNT(*) FROM job_audio") == [(0 if status is JobStatus.DONE else 1,)]
    if status is not JobStatus.QUEUED:
        assert await store.claim() is None, "the duplicate must not be queued to run again"


async def test_a_duplicate_of_a_failed_job_runs_again(open_store: Any, make_request: MakeRequest) -> None:
    store = await open_store()
    job, _ = await store.submit(make_request(b"flaky"))
    await _bring_to(store, JobStatus.FAILED, job.id)
    again, created = await store.submit(make_request(b"flaky"))
    assert created and again.id != job.id and again.status is JobStatus.QUEUED


@pytest.mark.parametrize(
    "changed",
    [
        {"audio": b"other audio"},
        {"options": RecognitionOptions(language="de")},
        {"options": RecognitionOptions(prompt="FusionPBX")},
        {"owner": "key-2"},
        {"owner": None},
        {"hints": AudioHints(encoding="mulaw", sample_rate_hz=8000)},
    ],
    ids=["audio", "language", "prompt", "other-key", "no-key", "hints"],
)
async def test_different_audio_options_or_key_is_a_new_job(
    open_store: Any, table_rows: Any, make_request: MakeRequest, changed: dict[str, Any]
) -> None:
    store = await open_store()
    base: dict[str, Any] = {"audio": b"the call", "owner": "key-1", "options": RecognitionOptions()}
    first, _ = await store.submit(make_request(**base))
    second, created = await store.submit(make_request(**{**base, **changed}))
    assert created and second.id != first.id
    assert await table_rows(store, "SELECT COUNT(*) FROM jobs") == [(2,)]


async def test_another_file_name_does_not_make_a_new_job(open_store: Any, make_request: MakeRequest) -> None:
    store = await open_store()
    first, _ = await store.submit(make_request(b"the call", filename="voicemail.wav"))
    second, created = await store.submit(make_request(b"the call", filename="retry.wav"))
    assert not created and second.id == first.id


async def test_a_job_finished_outside_the_window_is_not_reused(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    store = await open_store(clock=clock, jobs__duplicate_window_seconds=60)
    job, _ = await store.submit(make_request(b"the call"))
    await _bring_to(store, JobStatus.DONE, job.id)
    clock.advance(61)
    again, created = await store.submit(make_request(b"the call"))
    assert created and again.id != job.id and again.status is JobStatus.QUEUED


async def test_the_window_counts_from_when_the_job_finished(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    """A job that waited or ran longer than the window is still the same work: a retry of a
    request that is still queued or running, or that has just finished, attaches to it."""
    store = await open_store(clock=clock, jobs__duplicate_window_seconds=60)
    job, _ = await store.submit(make_request(b"a long call"))
    clock.advance(300)  # queued behind a backlog for longer than the window
    queued, created = await store.submit(make_request(b"a long call"))
    assert not created and queued.id == job.id
    claimed = await store.claim()
    assert claimed is not None
    clock.advance(300)  # a long recognition
    running, created = await store.submit(make_request(b"a long call"))
    assert not created and running.id == job.id
    assert await store.finish(job.id, claimed.token, transcript())
    clock.advance(30)
    done, created = await store.submit(make_request(b"a long call"))
    assert not created and done.id == job.id and done.status is JobStatus.DONE


# -- the queue caps ---------------------------------------------------------------------------------


async def test_a_full_queue_refuses_with_a_sane_retry_after(
    open_store: Any, table_rows: Any, make_request: MakeRequest, clock: Any
) -> None:
    store = await open_store(clock=clock, jobs__max_queued=2, jobs__hard_max_queued=4)
    first, _ = await store.submit(make_request(b"one"))
    await store.submit(make_request(b"two"))
    with pytest.raises(QueueFull) as refused:
        await store.submit(make_request(b"three"))
    assert refused.value.status == 429
    assert 1 <= refused.value.retry_after_seconds <= MAX_RETRY_AFTER_SECONDS
    assert await table_rows(store, "SELECT COUNT(*) FROM jobs") == [(2,)]
    assert await table_rows(store, "SELECT COUNT(*) FROM job_audio") == [(2,)]

    # Running jobs count too; a finished one makes room.
    claimed = await store.claim()
    assert claimed is not None
    with pytest.raises(QueueFull):
        await store.submit(make_request(b"three"))
    clock.advance(10)  # that job took 10 s: the estimate follows
    assert await store.finish(first.id, claimed.token, transcript())
    third, created = await store.submit(make_request(b"three"))
    assert created
    with pytest.raises(QueueFull) as refused:
        await store.submit(make_request(b"four"))
    # two jobs ahead, 10 s each, one worker
    assert 10 <= refused.value.retry_after_seconds <= 40


async def test_retry_after_is_capped(open_store: Any, make_request: MakeRequest, clock: Any) -> None:
    store = await open_store(clock=clock, jobs__max_queued=3)
    job, _ = await store.submit(make_request(b"slow"))
    claimed = await store.claim()
    assert claimed is not None
    clock.advance(3600)
    assert await store.finish(job.id, claimed.token, transcript())
    for n in range(3):
        await store.submit(make_request(f"next {n}".encode()))
    with pytest.raises(QueueFull) as refused:
        await store.submit(make_request(b"one more"))
    assert refused.value.retry_after_seconds == MAX_RETRY_AFTER_SECONDS


async def test_callers_that_cannot_be_refused_queue_up_to_the_hard_cap(
    open_store: Any, make_request: MakeRequest
) -> None:
    store = await open_store(jobs__max_queued=1, jobs__hard_max_queued=3)
    await store.submit(make_request(b"normal"))
    with pytest.raises(QueueFull):
        await store.submit(make_request(b"refusable"))
    for n in range(2):
        job, created = await store.submit(make_request(f"fusionpbx {n}".encode(), may_exceed_queue=True))
        assert created and job.status is JobStatus.QUEUED
    with pytest.raises(QueueFull):
        await store.submit(make_request(b"past the hard cap", may_exceed_queue=True))
    assert (await store.stats()).queued == 3


async def test_a_duplicate_attaches_even_when_the_queue_is_full(open_store: Any, make_request: MakeRequest) -> None:
    store = await open_store(jobs__max_queued=1)
    job, _ = await store.submit(make_request(b"the call"))
    again, created = await store.submit(make_request(b"the call"))
    assert not created and again.id == job.id


# -- crash recovery ---------------------------------------------------------------------------------


async def test_recover_puts_running_jobs_back_in_order(open_store: Any, make_request: MakeRequest, clock: Any) -> None:
    store = await open_store(clock=clock, jobs__max_attempts=3)
    ids = [(await store.submit(make_request(f"call {n}".encode())))[0].id for n in range(3)]
    first = await store.claim()
    second = await store.claim()
    assert first is not None and second is not None
    await store.close()  # the process died with two jobs running

    store = await open_store(clock=clock, jobs__max_attempts=3)
    clock.advance(LEASE + 1)
    assert await store.recover() == (2, 0)
    jobs = [await store.get(job_id) for job_id in ids]
    assert [j.status for j in jobs] == [JobStatus.QUEUED] * 3  # type: ignore[union-attr]
    assert [j.attempts for j in jobs] == [1, 1, 0]  # type: ignore[union-attr]
    assert all(j.has_audio and j.started_at is None for j in jobs)  # type: ignore[union-attr]
    # The old claims are void; the recovered jobs run first, in their original order.
    assert not await store.finish(ids[0], first.token, transcript())
    again = [await store.claim() for _ in range(3)]
    assert [c.job.id for c in again] == ids  # type: ignore[union-attr]
    assert [c.job.attempts for c in again] == [2, 2, 1]  # type: ignore[union-attr]
    clock.advance(LEASE + 1)
    assert await store.recover() == (3, 0)


async def test_a_job_that_keeps_killing_the_process_fails_after_max_attempts(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    store = await open_store(clock=clock, jobs__max_attempts=2, jobs__retention_days=1)
    poison, _ = await store.submit(make_request(b"poison"))
    innocent, _ = await store.submit(make_request(b"innocent"))

    claimed = await store.claim()
    assert claimed is not None and claimed.job.id == poison.id
    clock.advance(LEASE + 1)
    assert await store.recover() == (1, 0)  # first crash: tried again
    claimed = await store.claim()
    assert claimed is not None and claimed.job.id == poison.id and claimed.job.attempts == 2
    clock.advance(LEASE + 5)
    assert await store.recover() == (0, 1)  # second crash: given up

    failed = await store.get(poison.id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error_code == "worker_crashed"
    assert failed.error is not None and "stopped the server 2 times" in failed.error
    assert failed.finished_at == clock.now and failed.expires_at == pytest.approx(clock.now + DAY)
    assert not failed.has_audio
    assert not await store.finish(poison.id, claimed.token, transcript()), "its old claim is void"

    # The queue goes on with the next job; recovery again changes nothing.
    nxt = await store.claim()
    assert nxt is not None and nxt.job.id == innocent.id and nxt.job.attempts == 1
    clock.advance(LEASE + 1)
    assert await store.recover() == (1, 0)
    assert (await store.get(poison.id)).status is JobStatus.FAILED  # type: ignore[union-attr]


async def test_a_single_attempt_setting_fails_a_crashed_job_at_once(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    store = await open_store(clock=clock, jobs__max_attempts=1)
    job, _ = await store.submit(make_request(b"poison"))
    assert await store.claim() is not None
    clock.advance(LEASE + 1)
    assert await store.recover() == (0, 1)
    failed = await store.get(job.id)
    assert failed is not None and failed.status is JobStatus.FAILED and "1 times" in (failed.error or "")


async def test_a_job_given_up_after_crashes_still_gets_its_callback(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    """The caller that asked for a callback hears of the failure like of any other ending."""
    store = await open_store(clock=clock, jobs__max_attempts=1)
    job, _ = await store.submit(make_request(b"poison", callback_url="https://pbx.example/hook"))
    plain, _ = await store.submit(make_request(b"poison without a callback"))
    assert await store.claim() is not None and await store.claim() is not None
    clock.advance(LEASE + 1)
    assert await store.recover() == (0, 2)
    failed = await store.get(job.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.callback_status == "pending"
    assert [j.id for j in await store.due_callbacks()] == [job.id]
    assert (await store.get(plain.id)).callback_status is None  # type: ignore[union-attr]


# -- reading ----------------------------------------------------------------------------------------


async def test_queue_position_and_stats(open_store: Any, make_request: MakeRequest, clock: Any) -> None:
    store = await open_store(clock=clock)
    ids = [(await store.submit(make_request(f"call {n}".encode())))[0].id for n in range(3)]
    assert [await store.queue_position(i) for i in ids] == [1, 2, 3]
    stats = await store.stats()
    assert (stats.queued, stats.running, stats.active, stats.average_processing_seconds) == (3, 0, 3, None)

    claimed = await store.claim()
    assert claimed is not None
    assert [await store.queue_position(i) for i in ids] == [None, 1, 2]
    clock.advance(4)
    assert await store.finish(ids[0], claimed.token, transcript())
    claimed = await store.claim()
    assert claimed is not None
    clock.advance(8)
    assert await store.finish(ids[1], claimed.token, transcript())
    assert [await store.queue_position(i) for i in ids] == [None, None, 1]
    stats = await store.stats()
    assert (stats.queued, stats.running) == (1, 0)
    assert stats.average_processing_seconds == pytest.approx(6.0)
    assert await store.queue_position("no-such-job") is None
    assert await store.get("no-such-job") is None
    assert await store.ping()


async def test_a_keys_active_jobs_and_the_oldest_queued_job_are_counted(
    open_store: Any, make_request: MakeRequest, clock: Any
) -> None:
    """What the service reads for a key's ``max_concurrent_jobs`` and the oldest-queued-age
    metric; a store without it silently enforced no job limit (PostgreSQL did, before)."""
    store = await open_store(clock=clock)
    assert isinstance(store, QueueInsight)
    assert [await store.count_active(owner) for owner in ("pbx", None)] == [0, 0]
    assert await store.oldest_queued_at() is None

    first, _ = await store.submit(make_request(b"first", owner="pbx"))
    clock.advance(5)
    second, _ = await store.submit(make_request(b"second", owner="pbx"))
    other, _ = await store.submit(make_request(b"other", owner="other"))
    keyless, _ = await store.submit(make_request(b"keyless"))
    assert [await store.count_active(owner) for owner in ("pbx", "other", None, "nobody")] == [2, 1, 1, 0]
    assert await store.oldest_queued_at() == first.created_at == clock.now - 5

    claimed = await store.claim()
    assert claimed is not None and claimed.job.id == first.id
    assert await store.count_active("pbx") == 2, "a running job counts"
    assert await store.oldest_queued_at() == second.created_at == clock.now
    assert await store.finish(first.id, claimed.token, transcript())
    assert await store.count_active("pbx") == 1, "a done job does not"
    claimed = await store.claim()
    assert claimed is not None and await store.fail(second.id, claimed.token, "could not decode", "corrupt_audio")
    assert await store.count_active("pbx") == 0, "nor does a failed one"

    for job in (other, keyless):
        await _bring_to(store, JobStatus.DONE, job.id)
    assert [await store.count_active(owner) for owner in ("other", None)] == [0, 0]
    assert await store.oldest_queued_at() is None


async def test_a_keys_concurrent_job_limit_holds_through_the_service(
    open_store: Any, make_settings: Callable[..., Settings], prompts: Any
) -> None:
    """The limit end to end on each store: over it a new job is refused and taken back, a retry
    of a job that exists attaches to it, another key counts on its own."""
    store = await open_store()
    settings = make_settings(auth__keys={"pbx": {"key": "pbx-key", "max_concurrent_jobs": 1}, "other": {"key": "other-key"}})
    service = JobService(settings, store, JobEvents())
    pbx, other = owner_id("pbx-key"), owner_id("other-key")
    first_audio, second_audio = prompts["agent-alreadyon"].audio, prompts["agent-loggedoff"].audio
    try:
        first, created = await service.submit(make_request_for(first_audio, pbx))
        assert created
        with pytest.raises(TooManyJobs) as refused:
            await service.submit(make_request_for(second_audio, pbx))
        assert refused.value.retry_after_seconds >= 1
        again, created = await service.submit(make_request_for(first_audio, pbx))
        assert again.id == first.id and not created, "a retry attaches, never refused"
        assert (await service.submit(make_request_for(second_audio, other)))[1]
        assert await service.active_count(pbx) == 1 and (await store.stats()).queued == 2
    finally:
        service.close()


def make_request_for(audio: bytes, owner: str) -> JobRequest:
    return JobRequest(audio=audio, options=RecognitionOptions(), owner=owner, dialect="native")


# -- retention --------------------------------------------------------------------------------------


async def test_purge_removes_only_jobs_whose_retention_ended(
    open_store: Any, table_rows: Any, make_request: MakeRequest, clock: Any
) -> None:
    store = await open_store(clock=clock, jobs__retention_days=2)
    done, _ = await store.submit(make_request(b"done"))
    failed, _ = await store.submit(make_request(b"failed"))
    for job_id, status in ((done.id, JobStatus.DONE), (failed.id, JobStatus.FAILED)):
        await _bring_to(store, status, job_id)
    clock.advance(DAY)
    waiting, _ = await store.submit(make_request(b"still queued"))
    clock.advance(DAY - 1)
    assert await store.purge_expired() == 0
    assert await store.get(done.id) is not None

    clock.advance(2)
    assert await store.purge_expired() == 2
    assert await store.get(done.id) is None and await store.get(failed.id) is None
    clock.advance(365 * DAY)
    assert await store.purge_expired() == 0, "unfinished jobs never expire"
    assert await store.get(waiting.id) is not None
    assert await table_rows(store, "SELECT id FROM jobs") == [(waiting.id,)]
    assert await table_rows(store, "SELECT job_id FROM job_audio") == [(waiting.id,)]


async def test_the_purge_runs_by_itself(open_store: Any, make_request: MakeRequest, clock: Any) -> None:
    store = await open_store(clock=clock, jobs__retention_days=1)
    job, _ = await store.submit(make_request(b"done"))
    await _bring_to(store, JobStatus.DONE, job.id)
    purger = asyncio.create_task(purge_forever(store, 0.01))
    try:
        await asyncio.sleep(0.1)
        assert await store.get(job.id) is not None
        clock.advance(DAY + 1)
        for _ in range(500):
            if await store.get(job.id) is None:
                break
            await asyncio.sleep(0.01)
        assert await store.get(job.id) is None
        assert not purger.done(), "the purge goes on running"
    finally:
        await cancel_and_wait([purger])  # psycopg's pool may swallow the first cancel (asyncio.wait_for)
    assert purger.cancelled()
