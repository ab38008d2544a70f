"""IBM Watson Speech to Text v1 (``/v1/recognize``, ``/v1/recognitions``, ``/v1/models``).

Pure translation between Watson's wire format and our domain: the audio format from the
``Content-Type`` (``audio/l16;rate=8000``...), query parameters to :class:`RecognitionOptions`,
transcripts and jobs to ``SpeechRecognitionResults`` / ``RecognitionJob`` documents, and our
errors to ``{"code", "code_description", "error"}``. Field names follow ``ibm_watson`` 11.2.0
(``speech_to_text_v1.py``); see docs/providers.md section 4.

Watson has no notion of channels in its results (it downmixes), but a two-party call recording
is worth more split: when the audio was transcribed per channel, each result carries an extra
``channel`` field (zero-based), which the SDK keeps in its dict result.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from typing import Any, Mapping

import numpy as np

from ..engines.selection import alias_target, known_names, speaks
from .fields import boolean_flag, optional_text
from ..errors import (
    AudioError,
    AudioTooLong,
    CallpipeError,
    CorruptAudio,
    EmptyAudio,
    InvalidRequest,
    JobFailed,
    TooManyChannels,
    UnsupportedAudio,
    UnsupportedMediaType,
)
from ..integrations.callbacks import watson_signature
from ..jobs import Job, JobStatus
from ..settings import Settings
from ..transcript import AudioHints, RecognitionOptions, Segment, Transcript, Word
from .numbers import ascii_whole

DIALECT = "watson"
"""The job dialect and module name: the callbacks dispatcher finds :func:`callback_payload` by it."""

STATUS_WORDS = {
    JobStatus.QUEUED: "waiting",
    JobStatus.RUNNING: "processing",
    JobStatus.DONE: "completed",
    JobStatus.FAILED: "failed",
}

RECOGNIZE_PARAMETERS = frozenset({
    "model", "speech_begin_event", "enrichments", "language_customization_id", "acoustic_customization_id",
    "base_model_version", "customization_weight", "inactivity_timeout", "keywords", "keywords_threshold",
    "max_alternatives", "word_alternatives_threshold", "word_confidence", "timestamps", "profanity_filter",
    "smart_formatting", "smart_formatting_version", "speaker_labels", "grammar_name", "redaction", "audio_metrics",
    "end_of_phrase_silence_time", "split_transcript_at_phrase_end", "speech_detector_sensitivity", "sad_module",
    "background_audio_suppression", "low_latency", "character_insertion_bias", "interim_results",
})
"""Every query parameter ``SpeechToTextV1.recognize`` can send; the others earn a warning, as at IBM."""
JOB_PARAMETERS = RECOGNIZE_PARAMETERS | {
    "callback_url", "events", "user_token", "results_ttl", "processing_metrics", "processing_metrics_interval",
}

EVENT_STARTED = "recognitions.started"
EVENT_COMPLETED = "recognitions.completed"
EVENT_WITH_RESULTS = "recognitions.completed_with_results"
EVENT_FAILED = "recognitions.failed"
DEFAULT_EVENTS = (EVENT_STARTED, EVENT_COMPLETED, EVENT_FAILED)
KNOWN_EVENTS = frozenset({EVENT_STARTED, EVENT_COMPLETED, EVENT_WITH_RESULTS, EVENT_FAILED})

RAW_TYPES = {"audio/l16": None, "audio/mulaw": "mulaw", "audio/alaw": "alaw", "audio/basic": "mulaw"}
"""Headerless types (the format must come from the Content-Type) -> our raw encoding (l16: by byte order)."""
SNIFFED_TYPES = frozenset({
    "", "application/octet-stream", "application/x-www-form-urlencoded",
    "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/mp3", "audio/mpeg", "audio/mpeg3",
    "audio/x-mpeg-3", "audio/ogg", "audio/flac", "audio/x-flac", "audio/webm", "video/webm", "audio/mp4",
    "audio/m4a", "audio/x-m4a", "audio/aac",
})
"""Container types: the bytes say what they are (a PBX labels MP3 as ``audio/wav`` often enough).
``curl --data-binary`` without ``-H`` sends form-urlencoded; IBM treats that as auto-detect too."""
BASIC_RATE_HZ = 8000
LARGEST_RAW_RATE_HZ = 192_000
MAX_RAW_CHANNELS = 16
ENDIANNESS_PROBE_SAMPLES = 64_000

MODEL_FAMILIES = (
    ("Telephony", 8000, "telephony model for narrowband audio (8 kHz)"),
    ("Multimedia", 16000, "multimedia model for broadband audio (16 kHz)"),
    ("NarrowbandModel", 8000, "narrowband model (previous generation name)"),
    ("BroadbandModel", 16000, "broadband model (previous generation name)"),
)
LOCALES = {
    "ar": ("ar-MS",), "cs": ("cs-CZ",), "de": ("de-DE",), "en": ("en-US", "en-GB", "en-AU", "en-IN"),
    "es": ("es-ES", "es-MX", "es-LA"), "fr": ("fr-FR", "fr-CA"), "it": ("it-IT",), "ja": ("ja-JP",),
    "ko": ("ko-KR",), "nl": ("nl-NL",), "pt": ("pt-BR",), "sv": ("sv-SE",), "zh": ("zh-CN",),
}
"""Watson locales per ISO 639-1 code: what ``/v1/models`` lists for the languages we serve."""
WATSON_MODEL_NAME = re.compile(r"^([a-z]{2,3})-[A-Za-z]{2,4}_[A-Za-z0-9]+$")
DEFAULT_LANGUAGE = "en"
"""Without ``model`` Watson runs ``en-US_BroadbandModel``: US English."""

AUDIO_ERRORS: dict[str, type[AudioError]] = {
    cls.code: cls for cls in (AudioError, EmptyAudio, CorruptAudio, UnsupportedAudio, TooManyChannels, AudioTooLong)
}


@dataclass(frozen=True)
class RenderOptions:
    """How a transcript is to be written back, remembered in the job's metadata."""

    timestamps: bool = False
    word_confidence: bool = False
    keywords: tuple[str, ...] = ()
    keywords_threshold: float | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["keywords"] = list(self.keywords)
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderOptions:
        return cls(
            timestamps=bool(data.get("timestamps", False)),
            word_confidence=bool(data.get("word_confidence", False)),
            keywords=tuple(data.get("keywords", ())),
            keywords_threshold=data.get("keywords_threshold"),
            warnings=tuple(data.get("warnings", ())),
        )


@dataclass(frozen=True)
class RecognizeRequest:
    """A parsed ``/v1/recognize`` or ``/v1/recognitions`` request (its audio aside)."""

    options: RecognitionOptions
    hints: AudioHints | None
    render: RenderOptions
    callback_url: str | None = None
    """As the client sent it; the web layer checks it against the allowed hosts."""
    user_token: str | None = None
    events: tuple[str, ...] = ()


# --- requests ---------------------------------------------------------------------------------


def parse_recognize(
    query: Mapping[str, str], content_type: str | None, audio: bytes, *, asynchronous: bool = False
) -> RecognizeRequest:
    """Options, audio hints and rendering wishes of a recognize (or create-job) request.

    Raises :class:`InvalidRequest` for malformed values and :class:`UnsupportedMediaType` for a
    Content-Type Watson does not accept.
    """
    allowed = JOB_PARAMETERS if asynchronous else RECOGNIZE_PARAMETERS
    warnings: list[str] = []
    unknown = sorted(name for name in query if name not in allowed)
    if unknown:
        warnings.append(f"Unknown arguments: {', '.join(unknown)}.")
    if _boolean(query, "speaker_labels"):
        warnings.append("speaker_labels is not supported by this server; the response has no speaker labels.")
    _integer(query, "max_alternatives")  # validated; one alternative is always returned
    keywords = _keywords(query.get("keywords"))
    threshold = _probability(query, "keywords_threshold")
    model = optional_text(query, "model")
    options = RecognitionOptions(model=model, language=language_of_model(model), hotwords=keywords)
    render = RenderOptions(
        timestamps=_boolean(query, "timestamps") or _boolean(query, "speaker_labels"),
        word_confidence=_boolean(query, "word_confidence"),
        keywords=keywords,
        keywords_threshold=threshold,
        warnings=tuple(warnings),
    )
    request = RecognizeRequest(options=options, hints=audio_hints(content_type, audio), render=render)
    if asynchronous:
        request = _with_job_parameters(request, query)
    return request


def _with_job_parameters(request: RecognizeRequest, query: Mapping[str, str]) -> RecognizeRequest:
    """``events`` only count with a ``callback_url``, as at IBM (omitted: the default events)."""
    callback_url = optional_text(query, "callback_url")
    events = _events(query.get("events")) if callback_url else ()
    return replace(request, callback_url=callback_url, user_token=optional_text(query, "user_token"), events=events)


def _events(raw: str | None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return DEFAULT_EVENTS
    events = tuple(dict.fromkeys(e.strip() for e in raw.split(",") if e.strip()))
    unknown = [e for e in events if e not in KNOWN_EVENTS]
    if unknown:
        raise InvalidRequest(f"Invalid value for 'events': {', '.join(unknown)}; valid events are {', '.join(sorted(KNOWN_EVENTS))}")
    if EVENT_COMPLETED in events and EVENT_WITH_RESULTS in events:
        raise InvalidRequest(f"The events {EVENT_COMPLETED} and {EVENT_WITH_RESULTS} are incompatible; specify only one")
    return events


def language_of_model(model: str | None) -> str | None:
    """ISO 639-1 code from a Watson model name (``es-ES_Telephony`` -> ``es``).

    No model means Watson's default, US English; a name that is not Watson-shaped (one of our
    configured names) leaves the language to the model.
    """
    if model is None:
        return DEFAULT_LANGUAGE
    match = WATSON_MODEL_NAME.match(model)
    return match.group(1) if match else None


def parse_content_type(header: str | None) -> tuple[str, dict[str, str]]:
    """``audio/l16; rate=8000; channels=1`` -> (``audio/l16``, {rate: 8000, channels: 1})."""
    if not header:
        return "", {}
    mime, *parts = header.split(";")
    params: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if sep:
            params[name.strip().lower()] = value.strip().strip('"')
    return mime.strip().lower(), params


def audio_hints(content_type: str | None, audio: bytes) -> AudioHints | None:
    """What the Content-Type says about headerless audio; None where the bytes must be sniffed."""
    mime, params = parse_content_type(content_type)
    if mime in SNIFFED_TYPES:
        return None
    if mime not in RAW_TYPES:
        raise UnsupportedMediaType(
            f"Unsupported content type '{mime}'. Use audio/l16, audio/mulaw, audio/alaw, audio/basic, audio/wav, "
            "audio/flac, audio/mp3, audio/mpeg, audio/ogg, audio/webm or application/octet-stream"
        )
    if mime == "audio/basic":
        return AudioHints(encoding="mulaw", sample_rate_hz=BASIC_RATE_HZ, channels=1)
    rate = _content_type_number(params, "rate", mime, required=True, largest=LARGEST_RAW_RATE_HZ)
    channels = _content_type_number(params, "channels", mime, required=False, largest=MAX_RAW_CHANNELS) or 1
    encoding = RAW_TYPES[mime] or _l16_encoding(params.get("endianness"), audio, channels)
    return AudioHints(encoding=encoding, sample_rate_hz=rate, channels=channels)


def _content_type_number(params: Mapping[str, str], name: str, mime: str, *, required: bool, largest: int) -> int | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise InvalidRequest(f"The content type {mime} requires the parameter '{name}' (for example {mime};{name}=8000)")
        return None
    value = ascii_whole(raw)
    if value is None or not 0 < value <= largest:
        raise InvalidRequest(f"Invalid value for '{name}' in the content type {mime}: {raw!r}")
    return value


def _l16_encoding(endianness: str | None, audio: bytes, channels: int) -> str:
    if endianness is None:
        return l16_byte_order(audio, channels)
    value = endianness.lower()
    if value == "big-endian":
        return "s16be"
    if value == "little-endian":
        return "s16le"
    raise InvalidRequest(f"Invalid value for 'endianness' in the content type audio/l16: {endianness!r}")


def l16_byte_order(audio: bytes, channels: int = 1) -> str:
    """``s16le`` or ``s16be`` for 16-bit PCM of unknown byte order, as Watson auto-detects it.

    Read the wrong way round, the noisy low byte of each sample becomes its high byte and the
    signal turns to full-scale noise; read the right way, speech is smooth from one sample to the
    next. So the order whose sample-to-sample steps (per channel) are smaller is the right one.
    Silence reads the same both ways: then little-endian, what PCs and PBXs write.
    """
    usable = len(audio) - len(audio) % (2 * channels)
    head = audio[: min(usable, ENDIANNESS_PROBE_SAMPLES * 2 * channels)]
    if len(head) < 4 * channels:
        return "s16le"
    little = np.frombuffer(head, dtype="<i2").astype(np.int32).reshape(-1, channels)
    big = np.frombuffer(head, dtype=">i2").astype(np.int32).reshape(-1, channels)
    step_little = float(np.mean(np.abs(np.diff(little, axis=0))))
    step_big = float(np.mean(np.abs(np.diff(big, axis=0))))
    return "s16be" if step_big < step_little else "s16le"


def _keywords(raw: str | None) -> tuple[str, ...]:
    """The SDK comma-joins its list; Watson keywords are case-insensitive, so duplicates go."""
    if not raw:
        return ()
    seen: dict[str, str] = {}
    for keyword in raw.split(","):
        keyword = keyword.strip()
        if keyword and keyword.lower() not in seen:
            seen[keyword.lower()] = keyword
    return tuple(seen.values())


def _boolean(query: Mapping[str, str], name: str) -> bool:
    return boolean_flag(query, name, "Invalid value for '{name}': {raw!r}; use true or false")


def _integer(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid value for '{name}': {raw!r}; use a whole number") from exc
    if value < 0:
        raise InvalidRequest(f"Invalid value for '{name}': {raw!r}; it must not be negative")
    return value


def _probability(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid value for '{name}': {raw!r}; use a number between 0.0 and 1.0") from exc
    if not 0.0 <= value <= 1.0:
        raise InvalidRequest(f"Invalid value for '{name}': {raw!r}; use a number between 0.0 and 1.0")
    return value


def job_metadata(request: RecognizeRequest, *, asynchronous: bool, user_secret: str | None = None) -> dict[str, Any]:
    """What a job must remember to answer later in Watson's words (JSON, stable for dedupe).

    ``user_secret`` is the one registered for the job's callback URL: the signature of its
    notifications needs it after this process may have restarted.
    """
    metadata: dict[str, Any] = {"asynchronous": asynchronous, "render": request.render.to_dict()}
    if request.user_token is not None:
        metadata["user_token"] = request.user_token
    if request.callback_url:
        metadata["events"] = list(request.events)
        if user_secret:
            metadata["user_secret"] = user_secret
    return metadata


def is_recognition_job(job: Job) -> bool:
    """Jobs of ``/v1/recognitions`` (not the synchronous ``/v1/recognize`` ones) of this dialect."""
    return job.dialect == DIALECT and bool(job.metadata.get("asynchronous"))


# --- results ----------------------------------------------------------------------------------


def results_document(transcript: Transcript | None, render: RenderOptions) -> dict[str, Any]:
    """A ``SpeechRecognitionResults``: one final result per segment (Watson splits at pauses
    too), ``{"results": [], "result_index": 0}`` when nobody spoke."""
    results: list[dict[str, Any]] = []
    if transcript is not None:
        split = transcript.channels > 1
        for segment in transcript.segments:
            result = _result(segment, render)
            if result is not None:
                if split:
                    result["channel"] = segment.channel or 0
                results.append(result)
    document: dict[str, Any] = {"results": results, "result_index": 0}
    if render.warnings:
        document["warnings"] = list(render.warnings)
    return document


def _result(segment: Segment, render: RenderOptions) -> dict[str, Any] | None:
    text = segment.text.strip()
    if not text:
        return None
    words = [w for w in segment.words if w.text.strip()]
    alternative: dict[str, Any] = {"transcript": text + " ", "confidence": _confidence(segment, words)}
    if render.timestamps:
        alternative["timestamps"] = [[w.text.strip(), round(w.start, 2), round(w.end, 2)] for w in words]
    if render.word_confidence:
        alternative["word_confidence"] = [[w.text.strip(), _word_confidence(w)] for w in words]
    result: dict[str, Any] = {"final": True, "alternatives": [alternative]}
    if render.keywords and render.keywords_threshold is not None:
        spotted = keywords_result(words, render.keywords, render.keywords_threshold)
        if spotted:
            result["keywords_result"] = spotted
    return result


def _confidence(segment: Segment, words: list[Word]) -> float:
    if segment.confidence is not None:
        return round(segment.confidence, 2)
    scores = [w.confidence for w in words if w.confidence is not None]
    return round(sum(scores) / len(scores), 2) if scores else 0.0


def _word_confidence(word: Word) -> float:
    return round(word.confidence, 3) if word.confidence is not None else 0.0


def _normalized(text: str) -> str:
    """Lower case without punctuation, for matching keywords to recognised words."""
    return re.sub(r"[^\w']+", "", text.lower()).strip("'")


def _spoken(text: str) -> str:
    """A word as spoken: without the punctuation the engine attached (``key.`` -> ``key``)."""
    return re.sub(r"^[^\w']+|[^\w']+$", "", text.strip())


def keywords_result(words: list[Word], keywords: tuple[str, ...], threshold: float) -> dict[str, list[dict[str, Any]]]:
    """Watson's ``keywords_result``: each keyword (as the client wrote it) -> its matches.

    A keyword of several tokens matches consecutive words; its confidence is the lowest of its
    words, and matches below ``threshold`` are left out. Keywords without matches are omitted.
    """
    tokens = [_normalized(w.text) for w in words]
    spotted: dict[str, list[dict[str, Any]]] = {}
    for keyword in keywords:
        wanted = [t for t in (_normalized(part) for part in keyword.split()) if t]
        if not wanted:
            continue
        for start in range(len(tokens) - len(wanted) + 1):
            if tokens[start : start + len(wanted)] != wanted:
                continue
            matched = words[start : start + len(wanted)]
            confidence = min(_word_confidence(w) for w in matched)
            if confidence >= threshold:
                spotted.setdefault(keyword, []).append({
                    "normalized_text": " ".join(_spoken(w.text) for w in matched),
                    "start_time": round(matched[0].start, 2),
                    "end_time": round(matched[-1].end, 2),
                    "confidence": confidence,
                })
    return spotted


# --- jobs -------------------------------------------------------------------------------------


def job_created_document(job: Job, base_url: str) -> dict[str, Any]:
    """The answer to ``POST /v1/recognitions`` (201)."""
    return {"id": job.id, "created": iso_utc(job.created_at), "url": job_url(job.id, base_url), "status": STATUS_WORDS[job.status]}


def job_document(job: Job, base_url: str) -> dict[str, Any]:
    """A ``RecognitionJob`` for ``GET /v1/recognitions/{id}``: results once completed, the reason
    in ``warnings`` once failed."""
    document = _job_summary(job)
    document["url"] = job_url(job.id, base_url)
    render = RenderOptions.from_dict(job.metadata.get("render", {}))
    if job.status is JobStatus.DONE:
        document["results"] = [results_document(job.transcript, render)]
    warnings = list(render.warnings)
    if job.status is JobStatus.FAILED:
        warnings.append(f"The job failed: {job.error or 'recognition failed'}")
    if warnings:
        document["warnings"] = warnings
    return document


def jobs_document(jobs: list[Job]) -> dict[str, Any]:
    """``RecognitionJobs`` for ``GET /v1/recognitions``: newest first, no results."""
    return {"recognitions": [_job_summary(job) for job in jobs]}


def _job_summary(job: Job) -> dict[str, Any]:
    updated = job.finished_at or job.started_at or job.created_at
    summary: dict[str, Any] = {
        "id": job.id,
        "created": iso_utc(job.created_at),
        "updated": iso_utc(updated),
        "status": STATUS_WORDS[job.status],
    }
    if job.metadata.get("user_token") is not None:
        summary["user_token"] = job.metadata["user_token"]
    return summary


def job_url(job_id: str, base_url: str) -> str:
    return f"{base_url}/v1/recognitions/{job_id}"


def callback_payload(job: Job) -> tuple[bytes, dict[str, str]]:
    """The notification posted to an ended job's ``callback_url``: ``{"id", "event",
    "user_token"}``, with the results for ``recognitions.completed_with_results``, signed with
    ``X-Callback-Signature`` when a user secret was registered for the URL.

    Only ended jobs are notified, so ``recognitions.started`` is never sent.
    """
    events = job.metadata.get("events") or list(DEFAULT_EVENTS)
    payload: dict[str, Any] = {"id": job.id}
    if job.status is JobStatus.FAILED:
        payload["event"] = EVENT_FAILED
    elif EVENT_WITH_RESULTS in events:
        payload["event"] = EVENT_WITH_RESULTS
        render = RenderOptions.from_dict(job.metadata.get("render", {}))
        payload["results"] = [results_document(job.transcript, render)]
    else:
        payload["event"] = EVENT_COMPLETED
    if job.metadata.get("user_token") is not None:
        payload["user_token"] = job.metadata["user_token"]
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    secret = job.metadata.get("user_secret")
    if secret:
        headers["X-Callback-Signature"] = watson_signature(body, secret)
    return body, headers


def register_status_document(callback_url: str, created: bool) -> dict[str, str]:
    """``RegisterStatus``: 201 ``created`` the first time, 200 ``already created`` after."""
    return {"status": "created" if created else "already created", "url": callback_url}


# --- models -----------------------------------------------------------------------------------


def models_document(settings: Settings, base_url: str) -> dict[str, Any]:
    """``SpeechModels``: Watson's names for the languages our models serve (they run on the
    default model), then the configured names."""
    return {"models": [_model(name, settings, base_url) for name in model_names(settings)]}


def model_document(model_id: str, settings: Settings, base_url: str) -> dict[str, Any] | None:
    """One ``SpeechModel``, or None when the name is not one we list."""
    if model_id not in model_names(settings):
        return None
    return _model(model_id, settings, base_url)


def model_names(settings: Settings) -> list[str]:
    """Names a request may use: with ``providers.strict_model_names`` only the configured ones."""
    if settings.providers.strict_model_names:
        return known_names(settings)
    languages = _served_languages(settings)
    names = [f"{locale}_{family}" for language in languages for locale in LOCALES[language] for family, _, _ in MODEL_FAMILIES]
    return names + [name for name in settings.models if name not in names]


def _served_languages(settings: Settings) -> list[str]:
    """ISO codes of every configured model (empty ``languages`` means all Whisper knows)."""
    if any(not model.languages for model in settings.models.values()):
        return list(LOCALES)
    codes = {code for model in settings.models.values() for code in model.languages}
    return [code for code in LOCALES if code in codes]


def _model(name: str, settings: Settings, base_url: str) -> dict[str, Any]:
    target = name if name in settings.models else alias_target(name, settings)
    family = next((f for f, _, _ in MODEL_FAMILIES if name.endswith("_" + f)), None)
    if target is not None and (name in settings.models or family is None or not WATSON_MODEL_NAME.match(name)):
        codes = settings.models[target].languages
        locale = LOCALES.get(codes[0], (codes[0],))[0] if codes else "en-US"
        kind = f"model '{name}'" if name == target else f"alias '{name}' of the model '{target}'"
        rate, description = 8000, f"callpipe-asr {kind} ({settings.models[target].engine})"
    else:
        locale, family = name.split("_", 1)
        rate, kind = next((r, d) for f, r, d in MODEL_FAMILIES if f == family)
        description = f"{locale} {kind}, served by callpipe-asr's {_server_of(locale, settings)}"
    return {
        "name": name,
        "language": locale,
        "rate": rate,
        "url": f"{base_url}/v1/models/{name}",
        "supported_features": {
            "custom_language_model": False,
            "custom_acoustic_model": False,
            "speaker_labels": False,
            "low_latency": False,
        },
        "description": description,
    }


def _server_of(locale: str, settings: Settings) -> str:
    """The configured model a locale's requests run on (when its package is installed)."""
    language = locale.split("-", 1)[0]
    for name in (settings.default_model, *settings.models):
        if speaks(settings.models[name], language):
            return f"'{name}'"
    return "models (none configured for it)"


# --- errors -----------------------------------------------------------------------------------


def error_status(error: CallpipeError) -> int:
    """Watson's status for our error: audio it cannot read is a 400 ("unable to transcode data
    stream"), as at IBM; 415 is kept for a Content-Type it does not accept."""
    if isinstance(error, AudioError) and not isinstance(error, AudioTooLong):
        return 400
    return error.status


def error_document(error: CallpipeError) -> dict[str, Any]:
    """``{"code": 400, "code_description": "Bad Request", "error": "..."}``; ``ApiException``
    takes its message from ``error``."""
    status = error_status(error)
    return {"code": status, "code_description": _phrase(status), "error": error.message}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def failure_error(job: Job) -> CallpipeError:
    """The error a failed job answers a synchronous request with: the audio problem it found
    (400), else :class:`JobFailed` (422, not a 5xx: a retry would fail the same way)."""
    message = job.error or "recognition failed"
    error_class = AUDIO_ERRORS.get(job.error_code or "")
    return error_class(message) if error_class is not None else JobFailed(message)


def iso_utc(timestamp: float) -> str:
    """``2016-08-17T19:13:23.622Z``, as Watson writes times."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
