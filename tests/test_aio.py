"""``cancel_and_wait``: shutdown ends every background task, even one whose first cancellation a
library swallowed (psycopg's pool waiting through ``asyncio.wait_for`` did, in CI)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from callpipe_asr.aio import cancel_and_wait


async def _swallows_one_cancel(swallowed: list[int]) -> None:
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(1)  # what a racing wait_for does: the cancel is lost, the loop goes on


async def test_a_task_that_swallows_its_first_cancel_still_ends() -> None:
    swallowed: list[int] = []
    stubborn = asyncio.create_task(_swallows_one_cancel(swallowed))
    plain = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(cancel_and_wait([stubborn, plain], recancel_seconds=0.05), timeout=5)
    assert swallowed == [1] and stubborn.cancelled() and plain.cancelled()


async def test_a_task_that_had_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    failed = asyncio.create_task(fails(), name="broken-loop")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await cancel_and_wait([failed])
    assert any("broken-loop" in record.getMessage() for record in caplog.records)
