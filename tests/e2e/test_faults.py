"""Faults against real server processes: SIGTERM during work, a full disk, the job database
locked by another process. Whatever happens, the server keeps answering (health checks, reads)
with clear errors for new work, and every accepted job ends done or failed with a reason: none
lost, none recognised twice to completion.

Covered elsewhere: SIGKILL during work and a job that kills the server every time
(``test_crash_recovery.py``); an exception inside a worker fails that job and the pool goes on
(``tests/jobs/test_workers.py::test_an_unexpected_engine_error_fails_that_job_and_the_pool_goes_on``
and ``::test_a_result_that_cannot_be_stored_fails_the_job_and_the_pool_goes_on``); a lock held
by another process past the busy timeout just as a job's result is stored (``tests/jobs/
test_workers.py::test_a_lock_held_past_the_busy_timeout_as_a_job_ends_delays_its_result_but_never_loses_it``
and the two tests after it).
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from asr_testkit import Prompt

pytestmark = pytest.mark.e2e

SHORT_PROMPTS = ("agent-alreadyon", "conf-onlyperson", "vm-tocallback")
DISK_BYTES = 12 * 1024 * 1024
RESERVE_BYTES = 8 * 1024 * 1024
"""SQLite's write-ahead log alone grows to about 4 MB before it is checkpointed into the
database file; the reserve must hold that and the accepted jobs' results."""
PADDING_SECONDS = 30
"""Silence after each prompt: big uploads fill the disk in a few jobs, and the VAD makes
silence cost no model time."""
LOCK_SECONDS = 3.0
"""Shorter than SQLite's busy timeout (10 s): requests wait it out."""
LONG_LOCK_SECONDS = 12.0
"""Longer than the busy timeout: requests that must write give up, cleanly."""


def is_final(document: dict[str, Any]) -> bool:
    return document["status"] in ("done", "failed")


def rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(data_dir / "jobs.sqlite3")
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_sigterm_during_work_loses_nothing_and_repeats_nothing(
    start_server: Callable[..., Any], tmp_path: Path, prompts: dict[str, Prompt], medium_recording: Any
) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    ids = {"medium": server.post_job(medium_recording.audio, filename="medium.wav").json()["id"]}
    for name in SHORT_PROMPTS:
        ids[name] = server.post_job(prompts[name].audio, filename=f"{name}.wav").json()["id"]
    server.wait_for(ids["medium"], lambda d: d["status"] == "running", "running", timeout=30)
    server.stop(timeout=180)  # SIGTERM: finish the running job, or hand it back, then exit
    assert server.process.returncode == 0, server.log()
    at_exit = dict(rows(data, "SELECT id, status FROM jobs"))
    assert set(at_exit) == set(ids.values()), "every accepted job is still there"
    assert set(at_exit.values()) <= {"queued", "done"}, f"nothing left running or failed by a clean stop: {at_exit}"

    server = start_server(data)
    documents = {name: server.wait_for(job_id, is_final, "finished", timeout=180) for name, job_id in ids.items()}
    assert {name: d["status"] for name, d in documents.items()} == {name: "done" for name in ids}
    assert documents["medium"]["attempts"] == 1, "a job handed back at shutdown is not counted as a crash"
    server.stop()
    table = rows(data, "SELECT id, status, transcript, claim_token FROM jobs")
    assert sorted(row[0] for row in table) == sorted(ids.values()), "each job exactly once"
    assert all(status == "done" and json.loads(text)["text"] and token is None for _, status, text, token in table)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`DISK_BYTES` for the data directory (root only)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of ``directory``'s file system."""
    filler = directory / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as handle:  # its close fails too: the disk is full
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


def padded(prompt: Prompt, seconds: float) -> bytes:
    """``prompt`` (8 kHz 16-bit mono) followed by ``seconds`` of silence, as one WAV."""
    with wave.open(str(prompt.path)) as recording:
        speech = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2")
        rate = recording.getframerate()
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.concatenate([speech, np.zeros(int(rate * seconds), dtype="<i2")]).tobytes())
    return out.getvalue()


def test_a_full_disk_refuses_new_work_clearly_and_finishes_the_accepted(
    start_server: Callable[..., Any], small_disk: Path, prompts: dict[str, Prompt]
) -> None:
    data = small_disk / "data"
    server = start_server(data, CALLPIPE_ASR_JOBS__MIN_FREE_DISK_BYTES=str(RESERVE_BYTES))
    accepted: list[str] = []
    refusal = None
    for index, prompt in enumerate(list(prompts.values())[:40]):
        answer = server.post_job(padded(prompt, PADDING_SECONDS + index), filename=f"{prompt.name}.wav")
        assert answer.status in (202, 503), (answer.status, answer.body)
        if answer.status == 503:
            refusal = answer.json()["error"]
            break
        accepted.append(answer.json()["id"])
    assert accepted and refusal is not None, "the reserve was reached"
    assert refusal["code"] == "storage_full" and "disk" in refusal["message"]
    assert server.get("/healthz").status == 200
    for job_id in accepted:
        assert server.wait_for(job_id, is_final, "finished", timeout=120)["status"] == "done"

    filler = fill(small_disk)  # now truly full: every write fails
    answer = server.post_job(prompts["vm-goodbye"].audio, filename="late.wav")
    assert answer.status == 503 and answer.json()["error"]["code"] == "storage_full", answer.body
    assert server.get("/healthz").status == 200 and server.job(accepted[0])["status"] == "done"
    filler.unlink()
    # The administrator makes room (README, "Limits"): here the file system grows.
    subprocess.run(["mount", "-o", f"remount,size={4 * DISK_BYTES}", str(small_disk)], check=True)
    again = server.post_job(prompts["vm-goodbye"].audio, filename="late.wav")
    assert again.status == 202, again.body
    assert server.wait_for(again.json()["id"], is_final, "finished", timeout=120)["status"] == "done"
    assert "Traceback" not in server.log()


def hold_lock(database: Path, seconds: float, held: threading.Event) -> None:
    """Another process's write transaction (``BEGIN EXCLUSIVE``) held for ``seconds``."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def test_a_locked_database_makes_writes_wait_or_fail_cleanly(
    start_server: Callable[..., Any], tmp_path: Path, prompts: dict[str, Prompt]
) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    first = server.post_job(prompts["agent-alreadyon"].audio).json()["id"]
    server.wait_for(first, is_final, "finished", timeout=120)

    held = threading.Event()
    locker = threading.Thread(target=hold_lock, args=(data / "jobs.sqlite3", LOCK_SECONDS, held))
    locker.start()
    held.wait(10)
    started = time.monotonic()
    waited = server.post_job(prompts["conf-onlyperson"].audio)
    assert server.job(first)["status"] == "done", "reads go on under the lock (WAL)"
    locker.join()
    assert waited.status == 202, waited.body
    assert time.monotonic() - started >= LOCK_SECONDS * 0.5, "the write waited for the lock"
    assert server.wait_for(waited.json()["id"], is_final, "finished", timeout=120)["status"] == "done"

    held.clear()
    locker = threading.Thread(target=hold_lock, args=(data / "jobs.sqlite3", LONG_LOCK_SECONDS, held))
    locker.start()
    held.wait(10)
    refused = server.post_job(prompts["vm-tocallback"].audio)
    assert server.get("/healthz").status == 200
    locker.join()
    assert refused.status == 503, refused.body
    assert refused.json()["error"]["code"] == "store_busy"
    assert rows(data, "SELECT COUNT(*) FROM jobs") == [(2,)], "the refused job was not half-stored"
    after = server.post_job(prompts["vm-tocallback"].audio)
    assert after.status == 202 and server.wait_for(after.json()["id"], is_final, "finished", timeout=120)["status"] == "done"
