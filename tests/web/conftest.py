"""Shared fixtures of the web tests (fixtures of the upload page tests are prefixed
``upload_page_``).

Plain helpers live in importable modules, never here: every ``conftest.py`` outside a package is
imported under the one module name ``conftest``, so ``from conftest import ...`` in a module of
this folder reaches whichever folder's conftest pytest imported last. Prompts and the word error
rate come from ``asr_testkit``, server processes and the client factory's type from
``server_testkit``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient

from callpipe_asr.settings import Settings
from callpipe_asr.web.app import create_app
from server_testkit import Server, UploadPageClientFactory, launch, stop


# --- the upload page: in-process app -----------------------------------------------------------

UPLOAD_PAGE_READY_TIMEOUT_S = 60.0


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


@pytest.fixture(scope="module")
def upload_page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server process (``python -m callpipe_asr serve``) with the bundled model, its own
    data directory and ``jobs.keep_audio`` on (the finished page has a player); stopped at the
    end of the module. Its log is ``server.log`` next to the data directory."""
    running = launch(tmp_path_factory.mktemp("upload-page-server"), {"jobs": {"keep_audio": True}})
    yield running
    stop(running)
