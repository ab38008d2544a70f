"""Real ``callpipe-asr serve`` processes for the tests that talk HTTP to one: the provider
contract tests (the official SDKs), the FreeSWITCH Lua scripts and the upload page in a browser
(import as ``from server_testkit import ...``).

A module, not a conftest: every ``conftest.py`` outside a package is imported under the one
module name ``conftest``, and pytest drops the previous one from ``sys.modules`` before importing
the next, so ``from conftest import`` in a test module reaches whichever folder's conftest pytest
imported last (``tests/web``'s when it and ``tests/providers`` are on one command line). The
fixtures stay in the conftests and import their helpers from here.

The process itself is :func:`ops_testkit.start_server`'s, the one launcher of the suite.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from aiohttp.test_utils import TestClient

from ops_testkit import ServerProcess, free_port, start_server

TEST_KEY = "test-key-0123456789"
"""The API key of the shared servers (``auth.api_keys: [TEST_KEY]``)."""
STOP_TIMEOUT_SECONDS = 15

Server = ServerProcess
"""A server process on a free 127.0.0.1 port: ``url`` (no trailing slash), ``data_dir``,
``log()``."""

StartServer = Callable[[dict[str, Any]], Server]
"""``start(config)``: another server with its own settings (a YAML mapping), for one test."""

UploadPageClientFactory = Callable[..., Awaitable[TestClient]]
"""``await upload_page_client(run_workers=..., **setting_overrides)``: a test client of the
whole app, in process (the ``upload_page_client`` fixture of ``tests/web``)."""

__all__ = [
    "TEST_KEY", "Server", "StartServer", "UploadPageClientFactory", "free_port", "launch", "started_servers", "stop",
]


def launch(root: Path, config: dict[str, Any]) -> Server:
    """Start a server with ``config`` (a YAML mapping) under ``root`` (``config.yaml``,
    ``server.log`` and ``data/``), listening on 127.0.0.1 only, and wait for ``/readyz``."""
    return start_server(root, config, flags=("--host", "127.0.0.1"))


def stop(server: Server) -> None:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_SECONDS``: a slow stop never fails a teardown."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@contextmanager
def started_servers(root: Path) -> Iterator[StartServer]:
    """A :data:`StartServer` whose servers live in ``root/server-<n>``; all stop on exit."""
    started: list[Server] = []

    def start(config: dict[str, Any]) -> Server:
        running = launch(root / f"server-{len(started)}", config)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            stop(running)
