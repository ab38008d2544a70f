"""Fixtures of the end-to-end tests: real server processes on free ports (always killed at
teardown), a small HTTP client with timeouts, and long recordings made of real prompts."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pytest

START_TIMEOUT_SECONDS = 90.0
HTTP_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
         timeout: float = HTTP_TIMEOUT_SECONDS) -> Response:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(answer.status, dict(answer.headers), answer.read(), time.monotonic() - started)
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, dict(error.headers), error.read(), time.monotonic() - started)


def multipart(file: bytes, filename: str = "call.wav", **fields: str) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode() + file + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Server:
    """One ``callpipe-asr serve`` process (``args``: more flags, e.g. ``--role api``)."""

    def __init__(self, data_dir: Path, env: Mapping[str, str], log_path: Path, args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CALLPIPE_ASR_")}
        environment.update(env)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callpipe_asr", "serve", "--port", str(self.port), "--data-dir", str(data_dir), *args],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode} while starting:\n{self.log()}")
            try:
                if http("GET", self.url + "/readyz", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"the server was not ready within {timeout:.0f} s:\n{self.log()}")

    def get(self, path: str, timeout: float = HTTP_TIMEOUT_SECONDS, **headers: str) -> Response:
        return http("GET", self.url + path, headers=headers, timeout=timeout)

    def delete(self, path: str) -> Response:
        return http("DELETE", self.url + path)

    def post_job(self, audio: bytes, filename: str = "call.wav", **fields: str) -> Response:
        body, headers = multipart(audio, filename, **fields)
        return http("POST", self.url + "/api/v1/jobs", body, headers)

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.get(f"/api/v1/jobs/{job_id}")
        assert answer.status == 200, (answer.status, answer.body)
        document: dict[str, Any] = answer.json()
        return document

    def wait_for(self, job_id: str, predicate: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = 60.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll the job (not too often: the client and the server share the CPU with the work)."""
        deadline = time.monotonic() + timeout
        while True:
            document = self.job(job_id)
            if predicate(document):
                return document
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} not {what} after {timeout:.0f} s: {document['status']}\n{self.log()}")
            time.sleep(interval)

    def sigkill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if that takes longer than ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``start_server(data_dir, args=(), **env)``: a ready server process; every one started is
    killed at teardown, whatever the test did."""
    servers: list[Server] = []

    def start(data_dir: Path | None = None, args: Sequence[str] = (), **env: str) -> Server:
        server = Server(data_dir or tmp_path / "data", env, tmp_path / f"server-{len(servers)}.log", args)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=30)
        server._log.close()


def concatenate(paths: list[Path]) -> bytes:
    """One 8 kHz 16-bit mono WAV of the given prompts back to back, 0.3 s of silence between."""
    gap = np.zeros(2400, dtype="<i2")
    pieces = []
    for path in paths:
        with wave.open(str(path)) as recording:
            assert (recording.getframerate(), recording.getnchannels(), recording.getsampwidth()) == (8000, 1, 2)
            pieces += [np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2"), gap]
    out = io.BytesIO()
    with wave.open(out, "wb") as combined:
        combined.setnchannels(1)
        combined.setsampwidth(2)
        combined.setframerate(8000)
        combined.writeframes(np.concatenate(pieces).tobytes())
    return out.getvalue()


LONG_PROMPTS = ("demo-congrats", "priv-callee-options")
"""30 s + 31 s of speech: a recording of about a minute, long enough to catch its job running."""
MEDIUM_PROMPTS = ("demo-echotest", "vm-instructions")
"""22 s + 7 s."""


@dataclass(frozen=True)
class Recording:
    audio: bytes
    text: str

    @property
    def seconds(self) -> float:
        return (len(self.audio) - 44) / 16000


@pytest.fixture(scope="session")
def long_recording(prompts: Any) -> Recording:
    return Recording(concatenate([prompts[n].path for n in LONG_PROMPTS]), " ".join(prompts[n].text for n in LONG_PROMPTS))


@pytest.fixture(scope="session")
def medium_recording(prompts: Any) -> Recording:
    return Recording(concatenate([prompts[n].path for n in MEDIUM_PROMPTS]), " ".join(prompts[n].text for n in MEDIUM_PROMPTS))
