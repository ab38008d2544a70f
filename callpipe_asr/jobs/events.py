"""In-process wake-ups: workers learn of new work and waiting requests of finished jobs at once.

These are only a shortcut; everyone also polls the store, so a job written or finished by
another process is noticed within ``poll_interval_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib


class JobEvents:
    def __init__(self) -> None:
        self._work = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def work_added(self) -> None:
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    def job_ended(self, job_id: str) -> None:
        for event in self._waiters.pop(job_id, set()):
            event.set()

    async def wait_for_job(self, job_id: str, timeout: float) -> None:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    self._waiters.pop(job_id, None)
