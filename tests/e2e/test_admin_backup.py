"""Job administration and backups against a running server: ``callpipe-asr jobs`` cancels and
retries work the server then honours, and ``callpipe-asr backup`` copies the database under
load into a file that a fresh server starts from with every acknowledged job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from asr_testkit import Prompt

pytestmark = pytest.mark.e2e


KEEP_AUDIO = {"CALLPIPE_ASR_JOBS__KEEP_AUDIO": "true"}


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the server's own settings (as an administrator passes the same --config)."""
    return subprocess.run([sys.executable, "-m", "callpipe_asr", *args], capture_output=True, text=True,
                          timeout=90, env={**os.environ, **KEEP_AUDIO})


def is_final(document: dict[str, Any]) -> bool:
    return document["status"] in ("done", "failed")


def test_cancel_and_retry_on_a_running_server(
    start_server: Callable[..., Any], tmp_path: Path, medium_recording: Any, prompt: Prompt
) -> None:
    data = tmp_path / "data"
    server = start_server(data, CALLPIPE_ASR_JOBS__WORKERS="1", **KEEP_AUDIO)  # one runs, the next waits
    running = server.post_job(medium_recording.audio, filename="long.wav").json()["id"]
    queued = server.post_job(prompt.audio, filename="short.wav").json()["id"]
    server.wait_for(running, lambda d: d["status"] == "running", "running", timeout=30)
    where = ["--data-dir", str(data)]

    listing = admin("jobs", "list", "--status", "queued", *where)
    assert listing.returncode == 0 and queued in listing.stdout and running not in listing.stdout, listing
    refused = admin("jobs", "cancel", *where, "--", running)
    assert refused.returncode == 1 and "only queued jobs" in refused.stderr
    assert admin("jobs", "cancel", *where, "--", queued).returncode == 0
    cancelled = server.job(queued)
    assert cancelled["status"] == "failed"
    assert cancelled["error"]["message"] == "cancelled by the administrator"

    retried = admin("jobs", "retry", *where, "--", queued)
    assert retried.returncode == 0, retried.stderr
    document = server.wait_for(queued, is_final, "finished after the retry", timeout=120)
    assert document["status"] == "done" and document["attempts"] == 1, document
    assert server.wait_for(running, is_final, "finished", timeout=120)["status"] == "done"
    shown = admin("jobs", "show", "--text", *where, "--", queued)
    assert "status:     done" in shown.stdout and document["transcript"]["text"] in shown.stdout


def test_backup_under_load_restores_every_acknowledged_job(
    start_server: Callable[..., Any], tmp_path: Path, prompts: dict[str, Prompt]
) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    backups.mkdir()
    server = start_server(data, CALLPIPE_ASR_JOBS__KEEP_AUDIO="true", CALLPIPE_ASR_JOBS__MAX_QUEUED="1000")
    recordings = [p for p in prompts.values() if p.path.stat().st_size < 120_000][:120]
    acknowledged: list[tuple[float, str]] = []
    stop = threading.Event()

    def load(offset: int) -> None:
        """Keep uploading recordings, a few dozen a second, until told to stop, however long the
        backup takes on this machine (at most 900 uploads: the queue holds 1000). Each upload is a
        new job: a recording sent again carries another prompt, so it is no duplicate."""
        for index in range(offset, 900, 2):
            if stop.is_set():
                return
            recording = recordings[index % len(recordings)]
            answer = server.post_job(recording.audio, filename=f"{recording.name}.wav", prompt=f"upload {index}")
            if answer.status == 202:
                acknowledged.append((time.monotonic(), answer.json()["id"]))
            time.sleep(0.02)

    loaders = [threading.Thread(target=load, args=(offset,)) for offset in (0, 1)]
    for loader in loaders:
        loader.start()
    while len(acknowledged) < 8:
        time.sleep(0.05)
    started = time.monotonic()
    result = admin("backup", str(backups), "--data-dir", str(data))
    finished = time.monotonic()
    assert server.get("/healthz", timeout=5).status == 200
    deadline = time.monotonic() + 30
    while sum(at > finished for at, _ in acknowledged) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for loader in loaders:
        loader.join(timeout=120)
    assert result.returncode == 0, result.stderr
    copies = list(backups.glob("jobs-*.sqlite3"))
    assert len(copies) == 1 and not list(backups.glob("*.partial"))
    before = {job_id for at, job_id in acknowledged if at < started}
    after = {job_id for at, job_id in acknowledged if at > finished}
    assert before and after, "jobs were being accepted on both sides of the backup"
    server.stop()

    restored = tmp_path / "restored"  # README "Backup and restore": copy it in as jobs.sqlite3
    restored.mkdir()
    shutil.copy(copies[0], restored / "jobs.sqlite3")
    fresh = start_server(restored)
    for job_id in sorted(before):
        answer = fresh.get(f"/api/v1/jobs/{job_id}")
        assert answer.status == 200, f"job {job_id}, acknowledged before the backup, is missing"
        assert answer.json()["status"] in ("queued", "running", "done")
    assert all(fresh.get(f"/api/v1/jobs/{job_id}").status == 404 for job_id in after), "the copy is of one moment"
    in_order = [job_id for _, job_id in sorted(acknowledged) if job_id in before]
    waiting = [job_id for job_id in in_order if fresh.job(job_id)["status"] != "done"]
    if waiting:  # the oldest is next in the restored queue
        assert fresh.wait_for(waiting[0], is_final, "run from the restored queue", timeout=120)["status"] == "done"
