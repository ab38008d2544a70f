"""Real server processes for the provider contract tests: the official SDKs talk HTTP to them.

``server`` is one process per test session with one API key (``TEST_KEY``) configured;
``start_server(config)`` starts another with any settings (for queue-full, strict names, remote
audio and the like). Both listen on 127.0.0.1 only and are killed at teardown. The plain helpers
(``TEST_KEY``, ``Server``, ``launch``, ``stop``) live in ``server_testkit``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from server_testkit import TEST_KEY, Server, StartServer, launch, started_servers, stop


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared server with ``auth.api_keys: [TEST_KEY]``."""
    running = launch(tmp_path_factory.mktemp("provider-server"), {"auth": {"api_keys": [TEST_KEY]}})
    yield running
    stop(running)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start a server with its own settings (a YAML mapping) for one test."""
    with started_servers(tmp_path) as start:
        yield start
