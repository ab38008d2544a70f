"""The named model registry: loading each configured model once, sharing it, unloading it when idle.

Which model serves a request is decided by :mod:`.selection` (a pure function); this module
owns the loaded engines. The default model (and any with ``preload``) loads at start-up; the
others load at first use, so an idle server keeps only what it was told to, and a model with
``idle_unload_seconds`` is unloaded again once nobody has used it for that long. Each engine is
imported only when a model of its kind loads: a deployment without Vosk never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import EngineError
from ..settings import ModelSettings, Settings
from .base import Engine
from .devices import place, placed_settings
from .selection import UnknownModel, resolve_model_name
from .sources import installed_models, locate, source_problem

log = logging.getLogger(__name__)

__all__ = ["ModelRegistry", "UnknownModel", "check_models", "load_engine", "model_path", "resolve_model_name"]

MIN_IDLE_CHECK_SECONDS = 1.0
MAX_IDLE_CHECK_SECONDS = 60.0


def model_path(source: str, data_dir: Path) -> Path:
    """Where a faster-whisper model's files are, from its ``source`` setting (assembling the
    bundled multilingual model the first time). Nothing is downloaded."""
    return locate(ModelSettings(source=source), data_dir)


def load_engine(name: str, model: ModelSettings, data_dir: Path, concurrency: int) -> Engine:
    """Load ``model`` with its engine, or :class:`EngineError` naming the missing package, file
    or device."""
    path = locate(model, data_dir)
    if model.engine == "faster-whisper":
        from .faster_whisper import FasterWhisperEngine

        placement = place(name, model)
        return FasterWhisperEngine(name, path, placed_settings(model, placement), concurrency)
    if model.engine == "pocketsphinx":
        from .pocketsphinx import PocketSphinxEngine

        return PocketSphinxEngine(name, path, model)
    if model.engine == "vosk":
        from .vosk import VoskEngine

        return VoskEngine(name, path, model)
    if model.engine == "deepspeech":
        from .deepspeech import DeepSpeechEngine

        return DeepSpeechEngine(name, path, model, data_dir)
    raise EngineError(f"unknown engine '{model.engine}' for model '{name}'")


def preloaded_names(settings: Settings) -> tuple[str, ...]:
    """The served models that load at start-up: the default one and those with ``preload``."""
    served = settings.served_models
    return tuple(name for name in served if name == settings.default_model or settings.models[name].preload)


def check_models(settings: Settings, gpus: int | None = None) -> list[str]:
    """Problems that must stop start-up, each naming the model: a model that loads at start-up
    whose package or files are missing, and any served model asking for a CUDA device that is
    unusable. Models loaded on first use that are not installed only get a log line: requests
    for them are refused with a 400 saying what to install."""
    problems: list[str] = []
    preloaded = set(preloaded_names(settings))
    for name in settings.served_models:
        model = settings.models[name]
        missing = source_problem(model, settings.data_dir)
        if missing is not None:
            if name in preloaded:
                problems.append(f"model '{name}': {missing}")
            else:
                log.info("model %s is not installed and will not serve requests: %s", name, missing)
            continue
        try:
            place(name, model, gpus)
        except EngineError as exc:
            problems.append(exc.message)
    return problems


class ModelRegistry:
    """Loads each configured model once (at start-up or first use), shares it between worker
    threads, and unloads idle ones.

    Thread-safe: two threads asking for the same model load it once; a model being loaded does
    not block requests for another; a model in use (:meth:`use`) is never unloaded under a
    running recognition.
    """

    def __init__(self, settings: Settings, concurrency: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._concurrency = concurrency
        self._clock = clock
        self._installed = installed_models(settings)
        self._engines: dict[str, Engine] = {}
        self._users: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        self._lock = threading.Lock()
        self._load_locks = {name: threading.Lock() for name in settings.models}

    @property
    def installed(self) -> frozenset[str]:
        """Configured models whose packages and files are present (checked once, at creation)."""
        return self._installed

    def get(self, name: str) -> Engine:
        """The loaded model, loading it first if needed."""
        with self._load_locks[name]:
            with self._lock:
                engine = self._engines.get(name)
            if engine is None:
                engine = load_engine(name, self._settings.models[name], self._settings.data_dir, self._concurrency)
                with self._lock:
                    self._engines[name] = engine
        with self._lock:
            self._last_used[name] = self._clock()
        return engine

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[Engine]:
        """The loaded model for the length of one recognition: it cannot be unloaded meanwhile."""
        with self._lock:
            self._users[name] = self._users.get(name, 0) + 1
        try:
            yield self.get(name)
        finally:
            with self._lock:
                self._users[name] -= 1
                self._last_used[name] = self._clock()

    def load_at_startup(self) -> None:
        """Load the default model and those with ``preload`` (others wait for first use)."""
        for name in preloaded_names(self._settings):
            self.get(name)

    def unload_idle(self) -> list[str]:
        """Unload the models loaded on first use that nobody used for their
        ``idle_unload_seconds``; the names unloaded."""
        preloaded = set(preloaded_names(self._settings))
        now = self._clock()
        unloaded: list[Engine] = []
        names: list[str] = []
        with self._lock:
            for name, engine in list(self._engines.items()):
                limit = self._settings.models[name].idle_unload_seconds
                idle = now - self._last_used.get(name, now)
                if limit > 0 and name not in preloaded and not self._users.get(name) and idle >= limit:
                    del self._engines[name]
                    unloaded.append(engine)
                    names.append(name)
        for name, engine in zip(names, unloaded):
            engine.close()
            log.info("model %s unloaded after %.0f s unused", name, self._settings.models[name].idle_unload_seconds)
        return names

    def idle_check_seconds(self) -> float | None:
        """How often :meth:`unload_idle` should run; None when no model unloads when idle."""
        limits = [m.idle_unload_seconds for m in self._settings.models.values() if m.idle_unload_seconds > 0]
        if not limits:
            return None
        return min(MAX_IDLE_CHECK_SECONDS, max(MIN_IDLE_CHECK_SECONDS, min(limits) / 4))

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._engines

    def close(self) -> None:
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()


async def unload_idle_forever(registry: ModelRegistry) -> None:
    """Run :meth:`ModelRegistry.unload_idle` periodically until cancelled (nothing to do, and
    returns at once, where no model unloads when idle)."""
    interval = registry.idle_check_seconds()
    if interval is None:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(registry.unload_idle)
        except Exception:  # an engine's close failing must not stop the next check
            log.exception("unloading idle models failed")
