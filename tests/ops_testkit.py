"""Helpers of the operations tests (``from ops_testkit import ...``): a real ``callpipe-asr serve``
process with any settings, flags and scheme; a self-signed certificate; long recordings.

A module of its own (not a conftest) so the TLS, proxy and deployment tests share it by import.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

READY_TIMEOUT_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``python -m callpipe_asr serve`` process on a free loopback port."""

    url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    ssl_context: ssl.SSLContext | None = None
    stopped_with: int | None = field(default=None)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def json_log(self) -> list[dict[str, Any]]:
        """Every line of a ``--log-format json`` log, parsed (a line that is not JSON fails)."""
        return [json.loads(line) for line in self.log().splitlines() if line.strip()]

    def open(self, path: str, *, method: str = "GET", data: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        """One request; HTTP errors are answers too (status, headers, body)."""
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (killed if it takes longer than ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise AssertionError(f"the server did not stop within {timeout:.0f} s:\n{self.log()}") from None
        self.stopped_with = self.process.returncode
        return self.process.returncode


def start_server(
    root: Path,
    config: dict[str, Any],
    *,
    flags: Sequence[str] = (),
    ssl_context: ssl.SSLContext | None = None,
    wait_ready: bool = True,
) -> ServerProcess:
    """Start a server with ``config`` (a YAML mapping) and wait for ``/readyz``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPIPE_ASR_")}
    command = [sys.executable, "-m", "callpipe_asr", "serve", "--config", str(config_path), "--port", str(port),
               "--data-dir", str(root / "data"), *flags]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    scheme = "https" if ssl_context else "http"
    server = ServerProcess(f"{scheme}://127.0.0.1:{port}", root / "data", log_path, process, ssl_context)
    if wait_ready:
        _wait_ready(server)
    return server


def _wait_ready(server: ServerProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if server.open("/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    server.process.kill()
    raise AssertionError(f"the server was not ready within {READY_TIMEOUT_SECONDS:.0f} s:\n{server.log()}")


def self_signed_certificate(directory: Path, common_name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (and its key), made with the ``openssl`` command."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={common_name}", "-addext", f"subjectAltName=IP:{common_name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def client_context(cert: Path) -> ssl.SSLContext:
    """A client TLS context that trusts only ``cert``."""
    return ssl.create_default_context(cafile=str(cert))


def concatenated_wav(paths: Sequence[Path], destination: Path) -> Path:
    """One WAV of several same-format recordings, back to back: a job long enough to be caught
    running."""
    with wave.open(str(paths[0])) as first:
        params = first.getparams()
    with wave.open(str(destination), "wb") as out:
        out.setparams(params)
        for path in paths:
            with wave.open(str(path)) as part:
                out.writeframes(part.readframes(part.getnframes()))
    return destination


def multipart(fields: dict[str, str], file_name: str, audio: bytes, file_field: str = "file") -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its content type, for urllib."""
    boundary = "callpipe-ops-test-boundary"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_name}"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode() + audio + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


__all__ = [
    "ServerProcess", "client_context", "concatenated_wav", "free_port", "multipart", "self_signed_certificate",
    "start_server",
]
