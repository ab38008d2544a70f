"""Deepgram pre-recorded ``POST /v1/listen``.

Pure translation between Deepgram's wire format and our domain: query parameters to
:class:`RecognitionOptions` and :class:`AudioHints`, an ended job to the ``ListenV1Response``
document the v7 SDK parses (``deepgram/types/listen_v1response*.py``; required there:
``metadata.request_id, sha256, created, duration, channels, models, model_info`` and
``results.channels``), and our errors to ``{"err_code", "err_msg", "request_id"}``. See
docs/providers.md section 5.

The job id is the ``request_id``: a request retried after a timeout attaches to the same job
(dedupe) and gets the same id back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from .. import __version__
from ..engines import UnknownModel
from .fields import BOOLEAN_WORDS, boolean_flag, optional_text
from ..errors import (
    AudioError,
    AudioTooLong,
    AuthenticationFailed,
    CallpipeError,
    CorruptAudio,
    EmptyAudio,
    InvalidRequest,
    JobFailed,
    ModelNotInstalled,
    RemoteAccessDenied,
    RemoteRequestFailed,
    TooManyChannels,
    UnsupportedAudio,
    UnsupportedLanguage,
    UnsupportedMediaType,
    UnsupportedTask,
)
from ..jobs import Job, JobStatus
from ..transcript import AudioHints, ChannelMode, RecognitionOptions, Segment, Transcript, Word
from .numbers import ascii_whole

DIALECT = "deepgram"
"""The job dialect and module name: the callbacks dispatcher finds :func:`callback_payload` by it."""

RAW_ENCODINGS = {"linear16": "s16le", "mulaw": "mulaw", "alaw": "alaw"}
"""Deepgram ``encoding`` values for headerless audio -> our raw encodings."""
CONTAINER_ENCODINGS = frozenset({"flac", "opus", "ogg-opus", "amr-nb", "amr-wb"})
"""Encodings that come in a container with a header (Ogg, FLAC, AMR files): the bytes are sniffed."""
DEFAULT_LANGUAGE = "en"
"""Deepgram transcribes English unless told otherwise."""
MAX_SAMPLE_RATE_HZ = 192_000
MAX_CHANNELS = 16
UNSUPPORTED_FEATURES = (
    "diarize", "paragraphs", "summarize", "topics", "intents", "sentiment", "detect_entities", "redact",
    "search", "replace", "dictation", "measurements", "filler_words", "profanity_filter", "numerals",
)
"""Options a client may send that this server does not perform: a warning in the metadata says so."""
MODEL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/callpipe-asr/models")

ERROR_CODES = {
    400: "Bad Request",
    401: "INVALID_AUTH",
    403: "INSUFFICIENT_PERMISSIONS",
    404: "NOT_FOUND",
    413: "PAYLOAD_TOO_LARGE",
    422: "UNPROCESSABLE_ENTITY",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}
"""Deepgram's ``err_code`` per status: 400 and 401 as Deepgram sends them, the others by its pattern."""
AUDIO_ERRORS: dict[str, type[AudioError]] = {
    cls.code: cls for cls in (AudioError, EmptyAudio, CorruptAudio, UnsupportedAudio, TooManyChannels, AudioTooLong)
}


@dataclass(frozen=True)
class RenderOptions:
    """How the result is to be written back, remembered in the job's metadata."""

    model: str | None = None
    """The model name as the client sent it (``nova-3``), echoed in ``model_info``."""
    punctuate: bool = False
    utterances: bool = False
    multichannel: bool = False
    detect_language: bool = False
    tags: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["extra"] = [list(pair) for pair in self.extra]
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderOptions:
        return cls(
            model=data.get("model"),
            punctuate=bool(data.get("punctuate", False)),
            utterances=bool(data.get("utterances", False)),
            multichannel=bool(data.get("multichannel", False)),
            detect_language=bool(data.get("detect_language", False)),
            tags=tuple(data.get("tags", ())),
            extra=tuple((str(k), str(v)) for k, v in data.get("extra", ())),
            warnings=tuple(data.get("warnings", ())),
        )


@dataclass(frozen=True)
class ListenRequest:
    """A parsed ``/v1/listen`` query (the body aside)."""

    options: RecognitionOptions
    hints: AudioHints | None
    render: RenderOptions
    callback: str | None = None
    """As the client sent it; the web layer checks it against the allowed hosts."""


# --- requests ---------------------------------------------------------------------------------


def parse_listen(query: Sequence[tuple[str, str]]) -> ListenRequest:
    """Options from the query string; repeatable parameters (``keywords``, ``keyterm``, ``tag``)
    may come repeated or comma-joined."""
    single = {name: value for name, value in query}
    multi: dict[str, list[str]] = {}
    for name, value in query:
        multi.setdefault(name, []).append(value)
    detect_language, candidates = _detection(multi.get("detect_language", []))
    multichannel = _boolean(single, "multichannel")
    model = optional_text(single, "model")
    keyterms = _listed(multi.get("keyterm", []))
    language = None if detect_language else _language(optional_text(single, "language"))
    options = RecognitionOptions(
        model=model,
        language=language,
        detect_language=detect_language or language is None,  # language=multi: detect
        language_candidates=candidates,
        prompt=", ".join(keyterms) or None,
        hotwords=tuple(k for k in (_keyword(v) for v in _listed(multi.get("keywords", []))) if k),
        channel_mode=ChannelMode.SEPARATE if multichannel else ChannelMode.AUTO,
    )
    render = RenderOptions(
        model=model,
        punctuate=_boolean(single, "punctuate") or _boolean(single, "smart_format"),
        utterances=_boolean(single, "utterances"),
        multichannel=multichannel,
        detect_language=detect_language,
        tags=tuple(_listed(multi.get("tag", []))),
        extra=tuple(_extra(value) for value in multi.get("extra", [])),
        warnings=tuple(
            f"{name} is not supported by this server and was ignored" for name in UNSUPPORTED_FEATURES if _boolean_or_set(single, name)
        ),
    )
    _check_callback_method(single.get("callback_method"))
    return ListenRequest(options=options, hints=_hints(single), render=render, callback=optional_text(single, "callback"))


def _hints(query: Mapping[str, str]) -> AudioHints | None:
    """``encoding`` + ``sample_rate`` (+ ``channels``) for headerless audio; containers are sniffed."""
    encoding = optional_text(query, "encoding")
    if encoding is None:
        return None
    encoding = encoding.lower()
    if encoding in CONTAINER_ENCODINGS:
        return None
    if encoding not in RAW_ENCODINGS:
        supported = ", ".join(sorted(RAW_ENCODINGS) + sorted(CONTAINER_ENCODINGS))
        raise InvalidRequest(f"Bad Request: the encoding '{encoding}' is not supported here; use one of {supported}")
    rate = _whole(query, "sample_rate", MAX_SAMPLE_RATE_HZ)
    if rate is None:
        raise InvalidRequest(f"Bad Request: the encoding '{encoding}' needs a sample_rate")
    channels = _whole(query, "channels", MAX_CHANNELS) or 1
    return AudioHints(encoding=RAW_ENCODINGS[encoding], sample_rate_hz=rate, channels=channels)


def _check_callback_method(method: str | None) -> None:
    if method is not None and method.strip().upper() not in ("", "POST"):
        raise InvalidRequest(f"Bad Request: callback_method '{method}' is not supported here; results are sent with POST")


def _detection(values: list[str]) -> tuple[bool, tuple[str, ...]]:
    """``detect_language=true``, or language codes to detect among
    (``detect_language=es&detect_language=fr``, or ``es,fr``): whether to detect, and among which."""
    flags = [value.lower() for value in _listed(values)]
    if not flags:
        return False, ()
    if all(flag in BOOLEAN_WORDS for flag in flags):
        return BOOLEAN_WORDS[flags[-1]], ()
    codes = tuple(dict.fromkeys(code for flag in flags if flag not in BOOLEAN_WORDS and (code := _language(flag))))
    return True, codes


def _language(language: str | None) -> str | None:
    """BCP-47 to ISO 639-1 (``en-US`` -> ``en``); ``multi`` leaves it to detection."""
    if language is None:
        return DEFAULT_LANGUAGE
    if language.lower() == "multi":
        return None
    code = language.split("-")[0].split("_")[0].lower()
    if not code.isalpha() or len(code) > 3:
        raise InvalidRequest(f"Bad Request: '{language}' is not a language code such as 'en' or 'en-US'")
    return code


def _keyword(value: str) -> str:
    """``snuffleupagus:5`` -> ``snuffleupagus``: the boost has no equivalent here."""
    word, sep, boost = value.rpartition(":")
    if sep and re.fullmatch(r"-?\d+(\.\d+)?", boost.strip()):
        return word.strip()
    return value.strip()


def _extra(value: str) -> tuple[str, str]:
    key, sep, data = value.partition(":")
    if not sep or not key.strip():
        raise InvalidRequest(f"Bad Request: extra must be written key:value, not {value!r}")
    return key.strip(), data.strip()


def _listed(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _boolean(query: Mapping[str, str], name: str) -> bool:
    return boolean_flag(query, name, 'Bad Request: {name} must be true or false, not {raw!r}')


def _boolean_or_set(query: Mapping[str, str], name: str) -> bool:
    """True for a feature switched on (``diarize=true``) or configured (``redact=pci``)."""
    raw = query.get(name)
    if raw is None:
        return False
    return raw.strip().lower() not in ("", "false", "0")


def _whole(query: Mapping[str, str], name: str, largest: int) -> int | None:
    raw = optional_text(query, name)
    if raw is None:
        return None
    value = ascii_whole(raw)
    if value is None or not 0 < value <= largest:
        raise InvalidRequest(f"Bad Request: {name} must be a whole number between 1 and {largest}, not {raw!r}")
    return value


def parse_url_body(body: bytes) -> str:
    """The ``url`` of a ``{"url": "https://..."}`` body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deeply nested JSON
        raise InvalidRequest("Content-type was application/json, but we could not process the JSON payload.") from exc
    url = data.get("url") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("Bad Request: the JSON body needs a 'url' string naming the audio to transcribe")
    return url.strip()


def job_metadata(request: ListenRequest, audio: bytes) -> dict[str, Any]:
    """What the job must remember to answer in Deepgram's words, later or from a callback."""
    return {"render": request.render.to_dict(), "sha256": hashlib.sha256(audio).hexdigest()}


# --- responses --------------------------------------------------------------------------------


def response_document(job: Job) -> dict[str, Any]:
    """The ``ListenV1Response`` of an ended, successful job; no speech gives an empty transcript
    and no words in each channel."""
    render = RenderOptions.from_dict(job.metadata.get("render", {}))
    transcript = job.transcript
    channels = _channel_segments(transcript, render.multichannel)
    results: dict[str, Any] = {
        "channels": [_channel(segments, transcript, render) for segments in channels],
    }
    if render.utterances:
        results["utterances"] = _utterances(job.id, channels, render)
    return {"metadata": _metadata(job, transcript, len(channels), render), "results": results}


def accepted_document(job: Job) -> dict[str, str]:
    """``ListenV1AcceptedResponse``: the answer to a request with a ``callback``."""
    return {"request_id": job.id}


def _metadata(job: Job, transcript: Transcript | None, channels: int, render: RenderOptions) -> dict[str, Any]:
    engine_model = (transcript.model if transcript else None) or "default"
    model_id = str(uuid.uuid5(MODEL_NAMESPACE, engine_model))
    metadata: dict[str, Any] = {
        "transaction_key": "deprecated",
        "request_id": job.id,
        "sha256": job.metadata.get("sha256", ""),
        "created": iso_utc(job.created_at),
        "duration": round(transcript.duration if transcript else job.audio_duration or 0.0, 6),
        "channels": channels,
        "models": [model_id],
        "model_info": {model_id: {"name": render.model or engine_model, "version": __version__, "arch": engine_model}},
    }
    if render.tags:
        metadata["tags"] = list(render.tags)
    if render.extra:
        metadata["extra"] = dict(render.extra)
    if render.warnings:
        metadata["warnings"] = [
            {"parameter": w.split(" ", 1)[0], "type": "unsupported_feature", "message": w} for w in render.warnings
        ]
    return metadata


def _channel_segments(transcript: Transcript | None, multichannel: bool) -> list[list[Segment]]:
    """Segments per result channel: one list per audio channel with ``multichannel``, else one
    list with every channel's speech in time order (a split call reads as one dialogue)."""
    if transcript is None:
        return [[]]
    spoken = sorted((s for s in transcript.segments if s.text.strip()), key=lambda s: (s.start, s.channel or 0))
    if not multichannel:
        return [spoken]
    channels: list[list[Segment]] = [[] for _ in range(max(1, transcript.channels))]
    for segment in spoken:
        channels[min(segment.channel or 0, len(channels) - 1)].append(segment)
    return channels


def _channel(segments: list[Segment], transcript: Transcript | None, render: RenderOptions) -> dict[str, Any]:
    channel: dict[str, Any] = {"alternatives": [_alternative(segments, render)]}
    if render.detect_language and transcript is not None and transcript.language:
        channel["detected_language"] = transcript.language
        if transcript.language_confidence is not None:  # None: the configured fallback, not a detection
            channel["language_confidence"] = transcript.language_confidence
    return channel


def _alternative(segments: list[Segment], render: RenderOptions) -> dict[str, Any]:
    words = [w for s in segments for w in _words(s)]
    return {
        "transcript": _transcript(segments, words, render),
        "confidence": _mean_confidence(words),
        "words": [word for word, _ in words],
    }


def _words(segment: Segment) -> list[tuple[dict[str, Any], Word]]:
    """Deepgram's word objects: ``word`` lower case without punctuation, ``punctuated_word`` as
    recognised. Tokens that are only punctuation are dropped."""
    words: list[tuple[dict[str, Any], Word]] = []
    for word in segment.words:
        plain = bare_word(word.text)
        if not plain:
            continue
        words.append((
            {
                "word": plain,
                "start": round(word.start, 3),
                "end": round(word.end, 3),
                "confidence": round(word.confidence, 4) if word.confidence is not None else 0.0,
                "punctuated_word": word.text.strip(),
            },
            word,
        ))
    return words


def bare_word(text: str) -> str:
    """``Hello,`` -> ``hello``; inner apostrophes stay (``don't``)."""
    return re.sub(r"[^\w']+", "", text.lower()).strip("'")


def _transcript(segments: list[Segment], words: list[tuple[dict[str, Any], Word]], render: RenderOptions) -> str:
    """Punctuated text with ``punctuate``/``smart_format``; Deepgram's bare lower case otherwise."""
    if render.punctuate:
        return " ".join(s.text.strip() for s in segments)
    if words:
        return " ".join(word["word"] for word, _ in words)
    return " ".join(bare_word(part) for s in segments for part in s.text.split() if bare_word(part))


def _mean_confidence(words: list[tuple[dict[str, Any], Word]]) -> float:
    if not words:
        return 0.0
    return round(sum(float(word["confidence"]) for word, _ in words) / len(words), 4)


def _utterances(job_id: str, channels: list[list[Segment]], render: RenderOptions) -> list[dict[str, Any]]:
    """One utterance per segment (the engine splits at pauses), in time order over all channels."""
    utterances: list[dict[str, Any]] = []
    for index, segments in enumerate(channels):
        for segment in segments:
            words = _words(segment)
            utterances.append({
                "start": round(segment.start, 3),
                "end": round(segment.end, 3),
                "confidence": _mean_confidence(words),
                "channel": index if render.multichannel else 0,
                "transcript": _transcript([segment], words, render),
                "words": [word for word, _ in words],
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job_id}/{index}/{segment.start}")),
            })
    utterances.sort(key=lambda u: (u["start"], u["channel"]))
    return utterances


def callback_payload(job: Job) -> tuple[bytes, dict[str, str]]:
    """What an ended job posts to its ``callback``: the full response, or the error document of
    a failed job (the ``request_id`` ties either to the accepted request)."""
    if job.status is JobStatus.FAILED:
        document = error_document(failure_error(job), job.id)
    else:
        document = response_document(job)
    return json.dumps(document).encode(), {"Content-Type": "application/json", "dg-request-id": job.id}


# --- errors -----------------------------------------------------------------------------------


def error_status(error: CallpipeError) -> int:
    """Deepgram's status: unreadable audio, an unknown model and a body it cannot use are all
    400 there; a missing key is 401 like a wrong one."""
    if isinstance(error, AudioError) and not isinstance(error, AudioTooLong):
        return 400
    if isinstance(error, (UnknownModel, UnsupportedMediaType)):
        return 400
    if isinstance(error, AuthenticationFailed):
        return 401
    return error.status


def error_document(error: CallpipeError, request_id: str) -> dict[str, str]:
    """``{"err_code", "err_msg", "request_id"}``; the SDK's ``ApiError.body`` is this dict."""
    status = error_status(error)
    return {"err_code": _error_code(error, status), "err_msg": _error_message(error), "request_id": request_id}


def _error_code(error: CallpipeError, status: int) -> str:
    if isinstance(error, (RemoteRequestFailed, RemoteAccessDenied)):
        return "REMOTE_CONTENT_ERROR"
    return ERROR_CODES.get(status, "INTERNAL_SERVER_ERROR" if status >= 500 else "Bad Request")


def _error_message(error: CallpipeError) -> str:
    if isinstance(error, AuthenticationFailed):
        return f"Invalid credentials. ({error.message})"
    if isinstance(error, AudioError) and not isinstance(error, AudioTooLong):
        return f"Bad Request: failed to process audio: {error.message}"
    if isinstance(error, (UnknownModel, UnsupportedLanguage, UnsupportedTask, ModelNotInstalled)):
        return f"No such model/language/tier combination found: {error.message}"
    return error.message


def failure_error(job: Job) -> CallpipeError:
    """The error a failed job answers with: the audio problem it found (400), else
    :class:`JobFailed` (422, which the SDK does not retry: it would fail the same way)."""
    message = job.error or "recognition failed"
    error_class = AUDIO_ERRORS.get(job.error_code or "")
    return error_class(message) if error_class is not None else JobFailed(message)


def iso_utc(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
