"""A small, bounded version of ``bench/load.py``: concurrent uploads of real recordings, more
than the queue holds, against a real server process. Only behaviour is asserted (the bench
records the figures): every answer is a transcript or a 429 with Retry-After, no 5xx, and every
job the server accepted ended done or failed, with no job created for a refused upload."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bench.load import LoadPlan, pick_recordings, run_load, start_server, stop_server, violations

pytestmark = pytest.mark.e2e

PLAN = LoadPlan(uploads=24, concurrency=8, max_queued=3, workers=1, max_backoff_seconds=2.0)


def test_uploads_past_the_queue_get_transcripts_or_429s(tmp_path: Path) -> None:
    process, url = start_server(tmp_path, PLAN)
    try:
        answers, _ = asyncio.run(run_load(url, pick_recordings(12), PLAN))
    finally:
        stop_server(process)
    assert violations(answers) == []
    transcripts = [a for a in answers if a.status == 200]
    refusals = [a for a in answers if a.status == 429]
    assert transcripts and refusals, "the queue was both used and overrun"
    assert all(a.job_status == "done" for a in transcripts)

    connection = sqlite3.connect(tmp_path / "data" / "jobs.sqlite3")
    try:
        stored = dict(connection.execute("SELECT id, status FROM jobs").fetchall())
    finally:
        connection.close()
    assert stored == {a.job_id: "done" for a in transcripts}, "a job for every transcript, none for a refusal"
