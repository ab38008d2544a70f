"""The retention purge: expired jobs and their transcripts are deleted by a background task."""

from __future__ import annotations

import asyncio
import logging

from ..errors import StoreBusy, StoreUnavailable
from .store import JobStore

log = logging.getLogger(__name__)


async def purge_forever(store: JobStore, interval_seconds: float) -> None:
    """Run the purge now and then every ``interval_seconds`` until cancelled."""
    while True:
        try:
            removed = await store.purge_expired()
            if removed:
                log.info("retention purge removed %d expired jobs", removed)
        except (StoreBusy, StoreUnavailable) as exc:  # keep purging later; a failed purge loses nothing
            log.warning("retention purge failed: %s", exc.message)
        except Exception:
            log.exception("retention purge failed")
        await asyncio.sleep(interval_seconds)
