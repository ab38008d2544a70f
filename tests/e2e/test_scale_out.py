"""Scale-out against a real PostgreSQL server: one API process (``serve --role api``) and three
worker processes (``callpipe-asr worker``) share the jobs. A worker is SIGKILLed in the middle of a
job and PostgreSQL restarts while work is queued and running: every accepted job still ends, and
ends exactly once, which the database itself records (a trigger logs every ending)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import jiwer
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pg_server import ENDINGS_AUDIT

pytestmark = pytest.mark.e2e

SHORT_PROMPTS = ("agent-alreadyon", "conf-onlyperson", "vm-tocallback", "pbx-invalid", "conf-getpin",
                 "agent-loginok", "vm-nomore", "queue-thankyou")
LEASE_SECONDS = 10
"""Short, so the killed worker's job comes back soon; long enough to outlast the restart."""
FINISH_TIMEOUT_SECONDS = 180.0


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("'", "")).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(words(reference), words(hypothesis) or "<empty>"))


def rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        return connection.execute(sql, args).fetchall()  # type: ignore[call-overload,no-any-return]


class Worker:
    """One ``callpipe-asr worker`` process."""

    def __init__(self, config: Path, data_dir: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callpipe_asr", "worker", "--config", str(config), "--data-dir", str(data_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def sigkill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and the exit status (SIGKILL past ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log.close()
        return int(self.process.returncode)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Path], Worker]]:
    """``start_worker(config)``: a worker process; every one started is killed at teardown."""
    workers: list[Worker] = []

    def start(config: Path) -> Worker:
        worker = Worker(config, tmp_path / f"worker-{len(workers)}", tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=30)


def write_config(path: Path, dsn: str) -> Path:
    """Every process of the deployment reads the same file: the database, short leases, and one
    recognition thread per worker (three workers share two cores)."""
    path.write_text(
        f"jobs:\n  store: {dsn}\n  lease_seconds: {LEASE_SECONDS}\n  heartbeat_seconds: 1\n"
        "  poll_interval_seconds: 0.5\n  unserved_model_wait_seconds: 600\n"
        "models:\n  tiny.en:\n    cpu_threads: 1\n"
    )
    return path


def wait_until(predicate: Callable[[], Any], what: str, timeout: float, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s\n{logs()}")
        time.sleep(0.05)


def test_three_workers_survive_a_sigkill_and_a_postgresql_restart_and_finish_every_job_once(
    postgres_server: Any, start_server: Callable[..., Any], start_worker: Callable[[Path], Worker],
    tmp_path: Path, prompts: Any, medium_recording: Any,
) -> None:
    dsn = postgres_server.fresh_database()
    config = write_config(tmp_path / "callpipe-asr.yaml", dsn)
    migrated = subprocess.run([sys.executable, "-m", "callpipe_asr", "migrate", "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0 and "schema version 1" in migrated.stdout, migrated.stderr
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(ENDINGS_AUDIT)

    api = start_server(tmp_path / "api", args=("--role", "api"), CALLPIPE_ASR_CONFIG=str(config))
    assert api.get("/readyz").json()["checks"] == {"store": "ok"}, "an API node checks no model"
    workers = [start_worker(config) for _ in range(3)]

    def logs() -> str:
        return "\n".join(f"--- worker {n}\n{w.log()}" for n, w in enumerate(workers)) + f"\n--- api\n{api.log()}"

    wait_until(lambda: rows(dsn, "SELECT COUNT(*) FROM workers WHERE stopped_at IS NULL")[0][0] == 3,
               "three workers registered", 90, logs)

    work = {"medium": (medium_recording.audio, medium_recording.text)}
    work |= {name: (prompts[name].audio, prompts[name].text) for name in SHORT_PROMPTS}
    ids: dict[str, str] = {}
    for name, (audio, _) in work.items():
        answer = api.post_job(audio, filename=f"{name}.wav")
        assert answer.status == 202, answer.body
        ids[name] = answer.json()["id"]

    # SIGKILL the worker in the middle of the longest job.
    victim_pid = wait_until(
        lambda: rows(dsn, "SELECT w.pid FROM jobs j JOIN workers w ON w.id = j.claimed_by "
                          "WHERE j.id = %s AND j.status = 'running'", ids["medium"]),
        "the long job running", 60, logs)[0][0]
    time.sleep(1.0)
    victim = next(w for w in workers if w.process.pid == victim_pid)
    victim.sigkill()
    assert rows(dsn, "SELECT status FROM jobs WHERE id = %s", ids["medium"]) == [("running",)], "killed mid-job"

    # Restart PostgreSQL while work is still waiting or running.
    unfinished = rows(dsn, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")[0][0]
    assert unfinished >= 2, "the restart must come mid-run"
    postgres_server.restart()
    assert api.job(ids["medium"])["status"] in ("running", "queued"), "the API node answers after the restart"

    wait_until(lambda: rows(dsn, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")[0][0] == 0,
               "every job ended", FINISH_TIMEOUT_SECONDS, logs)

    jobs = {row[0]: row[1:] for row in rows(dsn, "SELECT id, status, attempts, claim_token, transcript FROM jobs")}
    assert sorted(jobs) == sorted(ids.values()), "every accepted job, no extra"
    for name, (_, text) in work.items():
        status, attempts, claim_token, transcript = jobs[ids[name]]
        assert status == "done" and claim_token is None, (name, status, logs())
        assert wer(text, api.job(ids[name])["transcript"]["text"]) <= 0.35, name
        assert 1 <= attempts <= 3, (name, attempts)
    assert jobs[ids["medium"]][1] >= 2, "the killed worker's job ran again elsewhere"
    endings = rows(dsn, "SELECT job_id, COUNT(*) FROM endings GROUP BY job_id")
    assert dict(endings) == {job_id: 1 for job_id in ids.values()}, "each job ended exactly once"
    assert rows(dsn, "SELECT COUNT(*) FROM job_audio") == [(0,)], "audio goes when its job ends"

    # A synchronous request on the API node waits for its job, wherever it runs.
    answer = api.post_job(prompts["all-circuits-busy-now"].audio, filename="sync.wav", wait="90")
    assert answer.status == 200, answer.body
    assert wer(prompts["all-circuits-busy-now"].text, answer.json()["transcript"]["text"]) <= 0.35

    survivors = [w for w in workers if w is not victim]
    assert [w.stop() for w in survivors] == [0, 0], logs()
    stopped = rows(dsn, "SELECT pid, stopped_at IS NOT NULL FROM workers")
    assert sorted(stopped) == sorted([(w.process.pid, w is not victim) for w in workers])
    api.stop()
    assert api.process.returncode == 0, api.log()


@pytest.mark.parametrize("command", [["serve", "--role", "api"], ["worker"]], ids=["api", "worker"])
def test_the_split_roles_refuse_sqlite(tmp_path: Path, command: list[str]) -> None:
    """With SQLite the jobs live in one process's file: an API without workers would queue
    forever, and a second process would take the first one's running jobs for crashed ones."""
    result = subprocess.run([sys.executable, "-m", "callpipe_asr", *command, "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "jobs.store: postgresql://" in result.stderr
    assert not (tmp_path / "jobs.sqlite3").exists()


def test_serve_alone_still_does_both_on_postgresql(
    postgres_server: Any, start_server: Callable[..., Any], tmp_path: Path, prompt: Any
) -> None:
    dsn = postgres_server.fresh_database()
    config = write_config(tmp_path / "callpipe-asr.yaml", dsn)
    server = start_server(tmp_path / "one", CALLPIPE_ASR_CONFIG=str(config))
    assert set(server.get("/readyz").json()["checks"]) == {"store", "model"}, "it runs workers: the model counts"
    answer = server.post_job(prompt.audio, filename="one.wav", wait="90")
    assert answer.status == 200, answer.body
    assert wer(prompt.text, answer.json()["transcript"]["text"]) <= 0.35
    assert rows(dsn, "SELECT models, stopped_at IS NULL FROM workers") == [(["tiny.en"], True)]
    server.stop()
    assert server.process.returncode == 0, server.log()
    assert rows(dsn, "SELECT stopped_at IS NOT NULL FROM workers") == [(True,)]


# -- a worker's own metrics -----------------------------------------------------------------------------

METRICS_TOKEN = "worker-scrape-token-0123"


def scrape(port: int, token: str | None = METRICS_TOKEN) -> tuple[int, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """``GET /metrics`` of a worker: the status and, when 200, every sample by name and labels."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read().decode()
            assert answer.headers["Content-Type"].startswith("text/plain; version=")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }
    return 200, samples


def test_a_worker_serves_its_own_metrics_on_metrics_worker_port(
    postgres_server: Any, start_server: Callable[..., Any], start_worker: Callable[[Path], Worker],
    tmp_path: Path, prompt: Any,
) -> None:
    """``callpipe-asr worker`` serves no API, so its jobs never reach the API process's /metrics;
    with ``metrics.worker_port`` it answers them itself, behind the metrics token."""
    dsn = postgres_server.fresh_database()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = write_config(tmp_path / "callpipe-asr.yaml", dsn)
    config.write_text(config.read_text() + f"metrics:\n  token: {METRICS_TOKEN}\n  worker_port: {port}\n")
    api = start_server(tmp_path / "api", args=("--role", "api"), CALLPIPE_ASR_CONFIG=str(config))
    worker = start_worker(config)

    def listening() -> bool:
        try:
            return scrape(port)[0] == 200
        except OSError:  # not listening yet
            return worker.process.poll() is not None
    wait_until(listening, "the worker's metrics listener up", 90, worker.log)
    assert worker.process.poll() is None, worker.log()
    assert scrape(port, token=None)[0] == 401 and scrape(port, token="wrong")[0] == 401
    wait_until(lambda: rows(dsn, "SELECT COUNT(*) FROM workers WHERE stopped_at IS NULL")[0][0] == 1,
               "the worker registered", 90, worker.log)

    answer = api.post_job(prompt.audio, filename="metered.wav", wait="90")
    assert answer.status == 200, answer.body
    duration = answer.json()["transcript"]["duration"]

    done = ("callpipe_asr_jobs_total", (("dialect", "native"), ("state", "done")))
    samples = wait_until(lambda: (lambda s: s if s.get(done) == 1.0 else None)(scrape(port)[1]),
                         "the worker's done counter at 1", 30, worker.log)
    assert samples[("callpipe_asr_audio_seconds_total", (("model", "tiny.en"),))] == pytest.approx(duration, abs=0.1)
    assert samples[("callpipe_asr_real_time_factor_count", (("model", "tiny.en"),))] == 1.0
    assert samples[("callpipe_asr_model_load_seconds", (("model", "tiny.en"),))] > 0
    assert samples[("callpipe_asr_worker_busy_seconds_total", ())] > 0
    assert samples[("callpipe_asr_workers", ())] == 2.0, "jobs.workers (the default)"
    assert samples[("callpipe_asr_store_up", ())] == 1.0
    assert samples[("callpipe_asr_queue_jobs", (("state", "queued"),))] == 0.0

    api_scrape = api.get("/metrics", Authorization=f"Bearer {METRICS_TOKEN}")
    assert api_scrape.status == 200
    assert 'callpipe_asr_jobs_total{dialect="native",state="done"}' not in api_scrape.body.decode(), \
        "the API process ran no job: only the worker's listener shows it"

    assert worker.stop() == 0, worker.log()
    with pytest.raises(OSError):
        scrape(port)
    api.stop()


def test_a_worker_whose_metrics_port_is_taken_stops_at_start_saying_so(postgres_server: Any, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        config = write_config(tmp_path / "callpipe-asr.yaml", postgres_server.fresh_database())
        config.write_text(config.read_text() + f"metrics:\n  worker_port: {port}\n")
        result = subprocess.run([sys.executable, "-m", "callpipe_asr", "worker", "--config", str(config),
                                 "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"metrics.worker_port: cannot listen on 127.0.0.1:{port}" in result.stderr
