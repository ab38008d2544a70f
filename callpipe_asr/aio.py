"""Small asyncio helpers the app's background work shares."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

log = logging.getLogger(__name__)

RECANCEL_SECONDS = 1.0
"""How long a cancelled task gets to end before it is cancelled again."""


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], recancel_seconds: float = RECANCEL_SECONDS) -> None:
    """Cancel the tasks and wait until every one has ended, cancelling again any that runs on.

    A library may swallow one cancellation: ``asyncio.wait_for`` on Python 3.10 and 3.11 loses a
    cancel that races with its inner future's completion, and psycopg's pool waits with it. A
    forever-loop (the retention purge, a worker) then runs on, and a shutdown that awaits it
    hangs for good, as a CI run did on PostgreSQL. Another cancel each ``recancel_seconds`` ends
    it. A task that ended with an error other than its cancellation has it logged: at shutdown
    there is nobody left to raise it to.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=recancel_seconds)
        for task in pending:
            log.debug("task %s ran on after its cancellation; cancelling it again", task.get_name())
            task.cancel()
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s had failed", task.get_name(), exc_info=task.exception())
