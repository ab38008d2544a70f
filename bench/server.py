"""A real ``callpipe-asr serve`` process on 127.0.0.1, and clients that use its native API.

The server runs the shipped defaults; the benchmark's config changes only where it keeps its data
(a temporary directory), its port, its log level, and ``jobs.duplicate_window_seconds: 0`` (the
benchmark sends the same files at several concurrencies, and a duplicate would be answered from
the first run's result instead of being recognised again).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import aiohttp
import yaml

from callpipe_asr.transcript import Transcript

from .direct import Outcome, Request, Run, failed

READY_TIMEOUT_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 900.0
SERVER_WAIT_SECONDS = 600


def free_port() -> int:
    """A TCP port free on loopback now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(directory: Path, port: int, extra: dict[str, Any] | None = None) -> Path:
    """The benchmark's server config: defaults, plus data dir, port and no duplicate answering."""
    config: dict[str, Any] = {
        "data_dir": str(directory / "data"),
        "server": {"host": "127.0.0.1", "port": port},
        "jobs": {"duplicate_window_seconds": 0},
    }
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    path = directory / "bench-server.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class MemoryStatus:
    """From ``/proc/<pid>/status``: kibibytes resident now and at the peak (VmHWM)."""

    rss_kib: int
    peak_kib: int

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


class ServerProcess:
    """One server process; ``ready_seconds`` is from spawn to the first 200 of ``/readyz``."""

    def __init__(self, directory: Path, extra_config: dict[str, Any] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = write_config(directory, self.port, extra_config)
        self._log = (directory / "server.log").open("wb")
        started = time.perf_counter()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "callpipe_asr", "serve", "--config", str(config), "--log-level", "warning"],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.ready_seconds = self._wait_ready(started)

    @property
    def pid(self) -> int:
        return self._process.pid

    def _wait_ready(self, started: float) -> float:
        deadline = started + READY_TIMEOUT_SECONDS
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited with {self._process.returncode} before it was ready")
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server was not ready within {READY_TIMEOUT_SECONDS:.0f} s")

    def memory(self) -> MemoryStatus:
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return MemoryStatus(fields["VmRSS"], fields["VmHWM"])

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


async def _post(session: aiohttp.ClientSession, base_url: str, request: Request) -> Outcome:
    """One synchronous native API request (``wait``) as the FreeSWITCH voicemail Lua sends it
    (``word_timestamps=false``, ``segment_timestamps=false``): the latency a client sees."""
    form = aiohttp.FormData()
    form.add_field("file", request.path.read_bytes(), filename=request.path.name, content_type="application/octet-stream")
    form.add_field("wait", str(SERVER_WAIT_SECONDS))
    form.add_field("word_timestamps", "false")
    form.add_field("segment_timestamps", "false")
    started = time.perf_counter()
    async with session.post(f"{base_url}/api/v1/jobs", data=form) as response:
        body = await response.json()
    latency = time.perf_counter() - started
    if response.status == 200 and body.get("status") == "done":
        return Outcome(request, Transcript.from_dict(body["transcript"]), latency)
    error = body.get("error") or {}
    return failed(request, f"HTTP {response.status} {body.get('status', '')}: {error.get('code')}: {error.get('message')}", latency)


async def _run(base_url: str, label: str, requests: Sequence[Request], concurrency: int) -> Run:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(request: Request) -> Outcome:
            async with limit:
                return await _post(session, base_url, request)

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(r) for r in requests))
        return Run(label, concurrency, time.perf_counter() - started, tuple(outcomes))


def run_clients(server: ServerProcess, label: str, requests: Sequence[Request], concurrency: int) -> Run:
    """``requests`` sent by ``concurrency`` clients at once, each waiting for its transcript."""
    return asyncio.run(_run(server.base_url, label, requests, concurrency))
