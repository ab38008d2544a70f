"""The durable queue against real server processes: SIGKILL with work queued and running loses
nothing and repeats nothing; a job that keeps killing the server ends failed instead of
crash-looping it; a busy server stays responsive and refuses work past its queue limit."""

from __future__ import annotations

import json
import re
import sqlite3
import statistics
from pathlib import Path
from typing import Any, Callable

import jiwer
import pytest

pytestmark = pytest.mark.e2e

SHORT_PROMPTS = ("agent-alreadyon", "conf-onlyperson", "vm-tocallback", "pbx-invalid")
RESPONSIVE_SECONDS = 2.0
"""The slowest a health check or page may answer while a worker is busy (2 shared cores; a
blocked event loop would take as long as the whole recognition, many seconds)."""
TYPICAL_SECONDS = 0.3
"""The median such answer."""


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("'", "")).split())


def assert_sensible(document: dict[str, Any], reference: str, max_wer: float = 0.35) -> None:
    assert document["status"] == "done", document["error"]
    hypothesis = document["transcript"]["text"]
    wer = jiwer.wer(words(reference), words(hypothesis) or "<empty>")
    assert wer <= max_wer, f"WER {wer:.2f}: {hypothesis!r} for {reference!r}"


def is_final(document: dict[str, Any]) -> bool:
    return document["status"] in ("done", "failed")


def db_rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(data_dir / "jobs.sqlite3")
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_sigkill_with_jobs_queued_and_running_loses_none_and_repeats_none(
    start_server: Callable[..., Any], tmp_path: Path, prompts: Any, medium_recording: Any
) -> None:
    data = tmp_path / "data"
    work = [("medium", medium_recording.audio, medium_recording.text)]
    work += [(name, prompts[name].audio, prompts[name].text) for name in SHORT_PROMPTS]

    server = start_server(data, CALLPIPE_ASR_JOBS__WORKERS="1")  # one running, the rest queued
    ids: dict[str, str] = {}
    for name, audio, _ in work:
        answer = server.post_job(audio, filename=f"{name}.wav")
        assert answer.status == 202, answer.body
        ids[name] = answer.json()["id"]
    server.wait_for(ids["medium"], lambda d: d["status"] == "running", "running", timeout=30)
    assert [server.job(ids[name])["status"] for name in SHORT_PROMPTS] == ["queued"] * len(SHORT_PROMPTS)
    server.sigkill()

    at_kill = dict(db_rows(data, "SELECT id, status FROM jobs"))
    assert at_kill == {ids["medium"]: "running", **{ids[name]: "queued" for name in SHORT_PROMPTS}}
    assert db_rows(data, "SELECT COUNT(*) FROM job_audio") == [(len(work),)]

    server = start_server(data, CALLPIPE_ASR_JOBS__WORKERS="1")
    documents = {name: server.wait_for(ids[name], is_final, "finished", timeout=120) for name, _, _ in work}
    for name, _, text in work:
        assert_sensible(documents[name], text)
    assert documents["medium"]["attempts"] == 2, "the job running at the kill ran once more"
    assert [documents[name]["attempts"] for name in SHORT_PROMPTS] == [1] * len(SHORT_PROMPTS)
    server.stop()
    assert server.process.returncode == 0, server.log()

    rows = db_rows(data, "SELECT id, status, transcript, claim_token FROM jobs")
    assert sorted(row[0] for row in rows) == sorted(ids.values()), "every accepted job exactly once, no extra"
    for job_id, status, transcript, claim_token in rows:
        assert status == "done" and claim_token is None
        assert json.loads(transcript)["text"]
    assert db_rows(data, "SELECT COUNT(*) FROM job_audio") == [(0,)], "audio goes when its job ends"


def test_a_job_that_kills_the_server_every_time_ends_failed_without_a_crash_loop(
    start_server: Callable[..., Any], tmp_path: Path, long_recording: Any, prompt: Any
) -> None:
    data = tmp_path / "data"
    env = {"CALLPIPE_ASR_JOBS__MAX_ATTEMPTS": "2", "CALLPIPE_ASR_JOBS__WORKERS": "1"}
    assert 50 <= long_recording.seconds <= 90

    server = start_server(data, **env)
    answer = server.post_job(long_recording.audio, filename="poison.wav")
    assert answer.status == 202, answer.body
    poison = answer.json()["id"]
    for attempt in (1, 2):
        if attempt > 1:
            server = start_server(data, **env)
        # "Processing this audio crashed the process": caught running, the process dies.
        server.wait_for(poison, lambda d, n=attempt: d["status"] == "running" and d["attempts"] == n,
                        f"running attempt {attempt}", timeout=30)
        server.sigkill()

    server = start_server(data, **env)
    document = server.job(poison)
    assert document["status"] == "failed"
    assert document["attempts"] == 2
    assert document["error"]["code"] == "worker_crashed"
    assert "stopped the server" in document["error"]["message"]
    assert document["transcript"] is None and document["finished_at"] is not None

    assert server.get("/healthz").status == 200
    answer = server.post_job(prompt.audio, filename="after.wav", wait="90")
    assert answer.status == 200, answer.body
    assert_sensible(answer.json(), prompt.text)
    assert server.job(poison)["status"] == "failed", "never retried again"
    server.stop()
    assert server.process.returncode == 0, server.log()
    assert db_rows(data, f"SELECT status, attempts FROM jobs WHERE id = '{poison}'") == [("failed", 2)]


def test_a_busy_server_stays_responsive_and_refuses_work_past_its_queue_limit(
    start_server: Callable[..., Any], long_recording: Any, prompt: Any
) -> None:
    server = start_server(CALLPIPE_ASR_JOBS__MAX_QUEUED="1", CALLPIPE_ASR_JOBS__WORKERS="1")
    answer = server.post_job(long_recording.audio, filename="long.wav")
    assert answer.status == 202, answer.body
    busy = answer.json()["id"]
    server.wait_for(busy, lambda d: d["status"] == "running", "running", timeout=30)

    latencies = []
    for _ in range(5):
        health = server.get("/healthz", timeout=10)
        assert health.status == 200 and health.json()["status"] == "ok"
        page = server.get("/", timeout=10, Accept="text/html")
        assert page.status == 200 and b"<form" in page.body
        ready = server.get("/readyz", timeout=10)
        assert ready.status == 200
        latencies += [health.seconds, page.seconds, ready.seconds]

    refused = server.post_job(prompt.audio, filename="other.wav")
    assert refused.status == 429, refused.body
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()
    assert set(error) == {"error"} and set(error["error"]) == {"code", "message", "status"}
    assert error["error"]["code"] == "queue_full" and error["error"]["status"] == 429 and error["error"]["message"]

    duplicate = server.post_job(long_recording.audio, filename="long-again.wav")
    assert duplicate.status == 202 and duplicate.json()["id"] == busy, "a retry attaches, even when full"

    for response in (server.get("/api/v1/jobs/no-such-job"), server.delete("/api/v1/jobs/no-such-job")):
        assert response.status == 404
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]["code"] == "not_found" and response.json()["error"]["status"] == 404

    assert server.job(busy)["status"] == "running", "the measurements must have been taken while busy"
    assert max(latencies) < RESPONSIVE_SECONDS, f"slowest answers: {sorted(latencies)[-3:]}"
    assert statistics.median(latencies) < TYPICAL_SECONDS, latencies
