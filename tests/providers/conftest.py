"""Real server processes for the provider contract tests: the official SDKs talk HTTP to them.

``server`` is one process per test session with one API key (``TEST_KEY``) configured;
``start_server(config)`` starts another with any settings (for queue-full, strict names, remote
audio and the like). Both listen on 127.0.0.1 only and are killed at teardown.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

TEST_KEY = "test-key-0123456789"
READY_TIMEOUT_SECONDS = 90


@dataclass
class Server:
    url: str
    """``http://127.0.0.1:<port>`` without a trailing slash."""
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(tmp_dir: Path, config: dict[str, Any]) -> Server:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = tmp_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_dir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPIPE_ASR_")}
    with log_path.open("wb") as log_file:  # the child keeps its own descriptor; ours must not leak
        process = subprocess.Popen(
            [sys.executable, "-m", "callpipe_asr", "serve", "--config", str(config_path), "--port", str(port),
             "--host", "127.0.0.1", "--data-dir", str(tmp_dir / "data")],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
    server = Server(f"http://127.0.0.1:{port}", tmp_dir / "data", process, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"the server was not ready within {READY_TIMEOUT_SECONDS} s:\n{server.log()}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared server with ``auth.api_keys: [TEST_KEY]``."""
    running = launch(tmp_path_factory.mktemp("provider-server"), {"auth": {"api_keys": [TEST_KEY]}})
    yield running
    stop(running)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Server]]:
    """Start a server with its own settings (a YAML mapping) for one test."""
    started: list[Server] = []

    def start(config: dict[str, Any]) -> Server:
        running = launch(tmp_path / f"server-{len(started)}", config)
        started.append(running)
        return running

    yield start
    for running in started:
        stop(running)
