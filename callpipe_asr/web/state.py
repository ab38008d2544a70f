"""Typed application state: everything the app owns, reachable through ``web.AppKey``s."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..engines import ModelRegistry
from ..jobs import JobService
from ..jobs.workers import WorkerPool
from ..metrics import Metrics
from ..settings import Settings
from .auth import KeyRing


@dataclass
class Runtime:
    """The resources the running app opened in its cleanup context (closed there too)."""

    service: JobService
    registry: ModelRegistry
    runs_workers: bool
    model_error: str | None = None
    """Why the default model failed to load, for /readyz; None while loading or once loaded."""
    pool: WorkerPool | None = None
    """This process's workers (None without): the metrics read how busy they are, a SIGTERM
    drains them."""


SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", KeyRing)
RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", Metrics)
