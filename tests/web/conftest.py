"""Shared fixtures of the web tests.

Every ``conftest.py`` outside a package is imported under the one module name ``conftest``, and
pytest drops the previous one from ``sys.modules`` before importing the next: once this file
exists, ``from conftest import ...`` in a module of this folder reaches *this* file, not
``tests/conftest.py``. So the root conftest's plain helpers (not its fixtures, which pytest
already provides here) are re-exported below, loaded from their file under a private name.

Fixtures of the upload page tests are prefixed ``upload_page_``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Awaitable, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient

from callpipe_asr.settings import Settings
from callpipe_asr.web.app import create_app


def _root_conftest() -> ModuleType:
    name = "_callpipe_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_root = _root_conftest()
Prompt = _root.Prompt
SOUNDS_DIR: Path = _root.SOUNDS_DIR
normalize_text: Callable[[str], str] = _root.normalize_text
word_error_rate: Callable[[str, str], float] = _root.word_error_rate

__all__ = ["Prompt", "SOUNDS_DIR", "normalize_text", "word_error_rate"]


# --- the upload page: in-process app -----------------------------------------------------------

UPLOAD_PAGE_READY_TIMEOUT_S = 60.0

UploadPageClientFactory = Callable[..., Awaitable[TestClient]]


async def upload_page_wait_ready(client: TestClient, timeout_s: float = UPLOAD_PAGE_READY_TIMEOUT_S) -> None:
    """Until /readyz answers 200 (the store is open and, with workers, the model loaded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await client.get("/readyz")
        body = await response.text()
        if response.status == 200:
            return
        if "failed" in body:
            raise AssertionError(f"the server cannot become ready: {body}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz was not 200 within {timeout_s:.0f} s")


@pytest.fixture
def upload_page_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], make_settings: Callable[..., Settings]
) -> UploadPageClientFactory:
    """``await upload_page_client(run_workers=..., **setting_overrides)``: a test client of the
    whole app (``create_app``) with its data in tmp_path, returned once /readyz is 200.

    With ``run_workers=True`` (the default) the real bundled model loads in the background and
    jobs are recognised; with ``False`` nothing ever claims a job, so jobs stay queued exactly
    as the test leaves them (or as it moves them through :func:`upload_page_store`).
    """

    async def start(*, run_workers: bool = True, **overrides: Any) -> TestClient:
        settings = make_settings(**overrides)
        client = await aiohttp_client(create_app(settings, run_workers=run_workers))
        await upload_page_wait_ready(client)
        return client

    return start


# --- the upload page: a real server process ----------------------------------------------------

UPLOAD_PAGE_SERVER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class UploadPageServer:
    """A ``callpipe-asr serve`` process on a free loopback port."""

    url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_readyz(server: UploadPageServer) -> None:
    deadline = time.monotonic() + UPLOAD_PAGE_SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server was not ready within {UPLOAD_PAGE_SERVER_START_TIMEOUT_S:.0f} s:\n{server.log()}")


@pytest.fixture(scope="module")
def upload_page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadPageServer]:
    """A real server process (``python -m callpipe_asr serve``) with the bundled model, its own
    data directory and ``jobs.keep_audio`` on (the finished page has a player); stopped at the
    end of the module. Its log is ``server.log`` next to the data directory."""
    root = tmp_path_factory.mktemp("upload-page-server")
    data_dir = root / "data"
    log_path = root / "server.log"
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CALLPIPE_ASR_")}
    env["CALLPIPE_ASR_JOBS__KEEP_AUDIO"] = "true"
    command = [sys.executable, "-m", "callpipe_asr", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = UploadPageServer(url=f"http://127.0.0.1:{port}", data_dir=data_dir, log_path=log_path, process=process)
    try:
        _wait_for_readyz(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
