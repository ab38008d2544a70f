"""Deployment: the systemd unit, the refusal to expose an unprotected server, a graceful stop on
SIGTERM (real processes), and structured logs that carry ids but never transcripts or keys."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from asr_testkit import Prompt, word_error_rate
from ops_testkit import ServerProcess, concatenated_wav, multipart, start_server

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "config" / "callpipe-asr.service"
KEY = "deploy-test-key-0123456789"
LONG_PROMPTS = ("agent-alreadyon", "agent-user", "auth-incorrect", "vm-intro", "agent-newlocation")
"""Recordings played back to back: a job that runs long enough to be caught running."""


# --- the systemd unit --------------------------------------------------------------------------


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            name, _, value = line.partition("=")
            settings.setdefault(name, []).append(value)
    return settings


def test_systemd_unit_runs_the_venv_as_a_dedicated_user_hardened() -> None:
    unit = _unit_settings()
    assert unit["User"] == ["callpipe-asr"] and unit["StateDirectory"] == ["callpipe-asr"]
    assert unit["ExecStart"][0].startswith("/opt/callpipe-asr/.venv/bin/callpipe-asr serve")
    assert "--log-format json" in unit["ExecStart"][0]
    assert "CALLPIPE_ASR_DATA_DIR=/var/lib/callpipe-asr" in unit["Environment"]
    for hardening, expected in {
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "Restart": "on-failure", "KillSignal": "SIGTERM",
    }.items():
        assert unit[hardening] == [expected], hardening
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert unit["MemoryMax"]
    # A graceful stop needs longer than the jobs' grace period (the default below).
    from callpipe_asr.settings import ServerSettings

    assert int(unit["TimeoutStopSec"][0]) > ServerSettings().shutdown_grace_seconds


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    executable = Path(sys.executable).with_name("callpipe-asr")
    assert executable.exists(), "the package's console script is missing: run ./scripts/setup"
    unit = tmp_path / "callpipe-asr.service"
    unit.write_text(UNIT.read_text().replace("/opt/callpipe-asr/.venv/bin/callpipe-asr", str(executable)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


# --- refusing to start exposed -----------------------------------------------------------------


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPIPE_ASR_")}
    return subprocess.run(
        [sys.executable, "-m", "callpipe_asr", "serve", "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    refused = _serve(tmp_path, "--host", "0.0.0.0", "--port", "9")
    assert refused.returncode == 2
    assert "allow_public_without_keys" in refused.stderr
    assert not (tmp_path / "data").exists()  # nothing was opened, let alone bound


def test_serve_refuses_a_certificate_it_cannot_load(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"server:\n  tls_certificate: {tmp_path}/missing.pem\n  tls_key: {tmp_path}/missing.key\n")
    refused = _serve(tmp_path, "--config", str(config), "--port", "9")
    assert refused.returncode == 2
    assert "server.tls_certificate" in refused.stderr


# --- a graceful stop ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


def _post_job(server: ServerProcess, audio: bytes, wait: float = 0) -> Answer:
    fields = {"wait": str(wait)} if wait else {}
    data, content_type = multipart(fields, "call.wav", audio)
    status, _, body = server.open("/api/v1/jobs", method="POST", data=data, timeout=300,
                                  headers={"Content-Type": content_type, "Authorization": f"Bearer {KEY}"})
    return Answer(status, json.loads(body))


def _in_background(server: ServerProcess, audio: bytes, wait: float) -> tuple[threading.Thread, list[Answer]]:
    """A synchronous request that waits for its job, sent from a thread."""
    answers: list[Answer] = []
    thread = threading.Thread(target=lambda: answers.append(_post_job(server, audio, wait)), daemon=True)
    thread.start()
    return thread, answers


def _wait_until_running(server: ServerProcess, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        status, _, body = server.open(f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"})
        assert status == 200
        if json.loads(body)["status"] == "running":
            return
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def _job_states(server: ServerProcess) -> dict[str, str]:
    with sqlite3.connect(f"file:{server.data_dir / 'jobs.sqlite3'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT id, status FROM jobs").fetchall())


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory, prompts: dict[str, Prompt]) -> tuple[bytes, str]:
    """24 s of real speech, and what it says."""
    path = concatenated_wav([prompts[name].path for name in LONG_PROMPTS], tmp_path_factory.mktemp("long") / "long.wav")
    return path.read_bytes(), " ".join(prompts[name].text for name in LONG_PROMPTS)


@dataclass
class GracefulStop:
    """What one server did from a SIGTERM during a job to its exit (several tests read it)."""

    server: ServerProcess
    running_id: str
    queued_id: str
    readiness_while_draining: tuple[int, dict[str, Any]]
    new_work_while_draining: Answer
    running_waiter: Answer
    queued_waiter: Answer
    exit_status: int
    stop_seconds: float
    reference: str


@pytest.fixture(scope="module")
def graceful_stop(
    tmp_path_factory: pytest.TempPathFactory, long_recording: tuple[bytes, str], prompts: dict[str, Prompt]
) -> Iterator[GracefulStop]:
    long_audio, reference = long_recording
    server = start_server(
        tmp_path_factory.mktemp("graceful-stop"),
        {"auth": {"keys": {"pbx": {"key": KEY}}}, "jobs": {"workers": 1}, "server": {"shutdown_grace_seconds": 90}},
        flags=["--log-format", "json", "--log-level", "info"],
    )
    try:
        running = _post_job(server, long_audio)
        queued = _post_job(server, prompts["vm-goodbye"].audio)
        assert (running.status, queued.status) == (202, 202)
        running_thread, running_answers = _in_background(server, long_audio, 300)  # attaches to the same job
        queued_thread, queued_answers = _in_background(server, prompts["vm-goodbye"].audio, 300)
        _wait_until_running(server, running.body["id"])
        time.sleep(0.15)  # both waiters are waiting by now
        stopping_since = time.monotonic()
        server.process.send_signal(15)
        time.sleep(0.3)
        ready_status, _, ready_body = server.open("/readyz")
        new_work = _post_job(server, prompts["agent-pass"].audio)
        running_thread.join(timeout=120)
        queued_thread.join(timeout=30)
        exit_status = server.process.wait(timeout=60)
        stopped = GracefulStop(
            server, running.body["id"], queued.body["id"], (ready_status, json.loads(ready_body)), new_work,
            running_answers[0], queued_answers[0], exit_status, time.monotonic() - stopping_since, reference,
        )
    except BaseException:
        print(server.log())
        raise
    finally:
        if server.process.poll() is None:
            server.process.kill()
    yield stopped


@pytest.mark.e2e
def test_sigterm_lets_the_running_job_finish_and_answers_its_waiting_request(graceful_stop: GracefulStop) -> None:
    answer = graceful_stop.running_waiter
    assert answer.status == 200 and answer.body["status"] == "done"
    assert word_error_rate(graceful_stop.reference, answer.body["transcript"]["text"]) <= 0.4
    assert graceful_stop.exit_status == 0
    assert graceful_stop.stop_seconds < 90  # it did not sit out the grace period


@pytest.mark.e2e
def test_sigterm_takes_no_new_work_and_keeps_queued_jobs_for_the_restart(graceful_stop: GracefulStop) -> None:
    ready_status, ready = graceful_stop.readiness_while_draining
    assert ready_status == 503 and ready["checks"]["shutdown"] == "draining"
    refused = graceful_stop.new_work_while_draining
    assert refused.status == 503 and refused.body["error"]["code"] == "shutting_down"  # the native shape
    waiter = graceful_stop.queued_waiter
    assert waiter.status == 503 and waiter.body["error"]["code"] == "shutting_down"
    states = _job_states(graceful_stop.server)
    assert states == {graceful_stop.running_id: "done", graceful_stop.queued_id: "queued"}  # none lost, none new


@pytest.mark.e2e
def test_json_logs_carry_request_and_job_ids_and_never_the_transcript_or_key(graceful_stop: GracefulStop) -> None:
    lines = graceful_stop.server.json_log()  # every line parses as JSON
    text = graceful_stop.server.log()
    assert KEY not in text
    job_lines = [line for line in lines if line.get("job_id") == graceful_stop.running_id]
    assert any("recognised by" in line["message"] for line in job_lines)  # the worker thread's line carries it
    accepted = next(line for line in job_lines if line["message"].startswith("job accepted"))
    assert accepted["request_id"] and accepted["key"] == "pbx"
    requests = [line for line in lines if line["logger"] == "callpipe_asr.web.access"]
    assert requests and all(line["request_id"] and line["level"] == "info" for line in requests)
    assert {line.get("key") for line in requests if line["message"] == "POST /api/v1/jobs"} == {"pbx"}
    words = graceful_stop.running_waiter.body["transcript"]["text"].split()
    phrases = {" ".join(words[i : i + 4]) for i in range(len(words) - 3)}
    assert phrases and not any(phrase in text for phrase in phrases), "a transcript reached the INFO log"


@pytest.mark.e2e
def test_a_job_still_running_after_the_grace_period_goes_back_to_the_queue(
    tmp_path: Path, long_recording: tuple[bytes, str]
) -> None:
    """The stop does not wait for the recognition it gave up on; its job is queued again, for
    the next start (tests/e2e cover that a queued job survives a restart and runs once)."""
    long_audio, _ = long_recording
    server = start_server(tmp_path, {"auth": {"keys": {"pbx": {"key": KEY}}}, "server": {"shutdown_grace_seconds": 0}})
    job = _post_job(server, long_audio)
    _wait_until_running(server, job.body["id"])
    started = time.monotonic()
    assert server.terminate(timeout=30) == 0
    assert time.monotonic() - started < 10
    assert _job_states(server) == {job.body["id"]: "queued"}
    with sqlite3.connect(f"file:{server.data_dir / 'jobs.sqlite3'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT attempts FROM jobs").fetchone() == (0,)  # a stop is not a crash
    assert "go back to the queue" in server.log()
