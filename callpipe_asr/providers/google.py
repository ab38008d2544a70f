"""Google Cloud Speech-to-Text v1 and v1p1beta1 over REST (proto3 JSON).

Pure translation: a ``RecognizeRequest`` / ``LongRunningRecognizeRequest`` body to our options
and hints, a transcript to a ``RecognizeResponse``, a job to a ``google.longrunning.Operation``,
and our errors to ``google.rpc.Status`` JSON. See docs/providers.md section 2.

Requests are read the way Google's own front end reads proto3 JSON: lowerCamelCase or
snake_case names, enums by name or number (the Python SDK sends numbers, curl users names),
integers as numbers or strings, bytes as standard or URL-safe base64. Fields this server does
not use (``adaptation``, ``diarizationConfig``, ``metadata``...) are ignored rather than refused,
so a request written for Google works unchanged.

The operation name is the job id, and the ``requestId`` is derived from it: a request retried
after a timeout attaches to the same job (the store's duplicate suppression) and gets the same
answer.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..engines import UnknownModel
from ..errors import (
    AudioError,
    AudioTooLong,
    AuthenticationFailed,
    CallpipeError,
    CorruptAudio,
    EmptyAudio,
    InvalidRequest,
    JobFailed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    TooManyChannels,
    UnsupportedAudio,
    UnsupportedMediaType,
    WaitTimeout,
)
from ..jobs import Job, JobProgress, JobStatus
from ..transcript import AudioHints, ChannelMode, RecognitionOptions, Segment, Transcript, Word
from .numbers import ascii_whole

DIALECT = "google"
API_VERSIONS = ("v1", "v1p1beta1")

AUDIO_ENCODINGS = (
    "ENCODING_UNSPECIFIED", "LINEAR16", "FLAC", "MULAW", "AMR", "AMR_WB", "OGG_OPUS",
    "SPEEX_WITH_HEADER_BYTE", "MP3", "WEBM_OPUS", "ALAW",
)
"""``RecognitionConfig.AudioEncoding`` by number (``ALAW`` = 10 exists in v1p1beta1 only; v1
requests naming it are accepted too)."""
RAW_ENCODINGS = {"LINEAR16": "s16le", "MULAW": "mulaw", "ALAW": "alaw"}
"""Encodings that may arrive without a header -> our raw encodings. Everything else has a
container header and is sniffed."""
CONTAINER_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"ID3", b"#!AMR", b"\x1aE\xdf\xa3", b"FORM", b".snd", b"caff")
"""Leading bytes of containers: LINEAR16/MULAW/ALAW "raw or inside WAV" is only raw without one."""
MAX_SAMPLE_RATE_HZ = 192_000
MAX_CHANNELS = 16
BASE64_OVERHEAD_BYTES = 64 * 1024
"""Room for the JSON around the base64 audio in a request body."""
PUNCTUATION = ".,?!;:…\"¿¡"
"""Stripped from the edges of words when ``enableAutomaticPunctuation`` is off, as Google leaves
them out then (apostrophes, hyphens and decimal points inside words stay)."""
LANGUAGE_CODE = re.compile(r"^([A-Za-z]{2,3})([-_][A-Za-z0-9]{1,8})*$")

GRPC_CODES = {
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}
"""``google.rpc.Code`` numbers, for the ``error`` of a failed operation."""
AUDIO_ERRORS: dict[str, type[AudioError]] = {
    cls.code: cls for cls in (AudioError, EmptyAudio, CorruptAudio, UnsupportedAudio, TooManyChannels, AudioTooLong)
}
MISSING_CREDENTIALS_MESSAGE = "The request is missing a valid API key."
INVALID_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
INVALID_TOKEN_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential."
)


class ApiKeyNotValid(InvalidRequest):
    """A key sent as ``?key=`` or ``x-goog-api-key`` that is not one of ours. Google answers that
    with 400 INVALID_ARGUMENT and an ``ErrorInfo`` whose reason is ``API_KEY_INVALID`` (not 401),
    so clients that check the reason keep working."""

    code = "api_key_invalid"


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderOptions:
    """What the response needs from the request. Kept in the job's metadata, so an operation
    polled later renders the way its request asked."""

    word_time_offsets: bool = False
    word_confidence: bool = False
    punctuation: bool = False
    separate_channels: bool = False
    language_code: str | None = None
    alternative_language_codes: tuple[str, ...] = ()
    uri: str | None = None

    def to_metadata(self) -> dict[str, Any]:
        return {
            "word_time_offsets": self.word_time_offsets,
            "word_confidence": self.word_confidence,
            "punctuation": self.punctuation,
            "separate_channels": self.separate_channels,
            "language_code": self.language_code,
            "alternative_language_codes": list(self.alternative_language_codes),
            "uri": self.uri,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> RenderOptions:
        return cls(
            word_time_offsets=bool(metadata.get("word_time_offsets")),
            word_confidence=bool(metadata.get("word_confidence")),
            punctuation=bool(metadata.get("punctuation")),
            separate_channels=bool(metadata.get("separate_channels")),
            language_code=metadata.get("language_code"),
            alternative_language_codes=tuple(metadata.get("alternative_language_codes") or ()),
            uri=metadata.get("uri"),
        )


@dataclass(frozen=True)
class RecognizeRequest:
    """A parsed ``{config, audio}`` body: exactly one of ``content`` and ``uri`` is set."""

    options: RecognitionOptions
    render: RenderOptions
    encoding: str = "ENCODING_UNSPECIFIED"
    sample_rate_hz: int | None = None
    channel_count: int | None = None
    content: bytes | None = field(default=None, repr=False)
    uri: str | None = None

    def hints_for(self, audio: bytes) -> AudioHints | None:
        """Hints for headerless LINEAR16/MULAW/ALAW; None where the bytes carry a header
        (Google's "raw or inside WAV") or the encoding is a container format."""
        raw = RAW_ENCODINGS.get(self.encoding)
        if raw is None or has_container_header(audio):
            return None
        if self.sample_rate_hz is None:
            raise InvalidRequest(
                f"Invalid recognition 'config': sample_rate_hertz is required for headerless {self.encoding} audio."
            )
        return AudioHints(encoding=raw, sample_rate_hz=self.sample_rate_hz, channels=self.channel_count or 1)


def has_container_header(audio: bytes) -> bool:
    return audio.startswith(CONTAINER_MAGIC) or audio[4:8] == b"ftyp"


def max_body_bytes(max_upload_bytes: int) -> int:
    """The largest request body for ``max_upload_bytes`` of audio sent as base64."""
    return math.ceil(max_upload_bytes / 3) * 4 + BASE64_OVERHEAD_BYTES


def parse_request(body: bytes) -> RecognizeRequest:
    """A ``RecognizeRequest`` or ``LongRunningRecognizeRequest`` body (``outputConfig`` ignored)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deeply nested JSON
        raise InvalidRequest(f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidRequest("Invalid JSON payload received. The request must be a JSON object.")
    config = _message(document, "config", "config")
    audio = _message(document, "audio", "audio")
    content, uri = _audio_source(audio)
    encoding = _encoding(_field(config, "encoding"))
    sample_rate = _integer(_field(config, "sampleRateHertz"), "config.sample_rate_hertz", 1, MAX_SAMPLE_RATE_HZ)
    channel_count = _integer(_field(config, "audioChannelCount"), "config.audio_channel_count", 1, MAX_CHANNELS)
    separate = _boolean(_field(config, "enableSeparateRecognitionPerChannel"), "config.enable_separate_recognition_per_channel")
    language_code = _language_code(_field(config, "languageCode"), "config.language_code")
    alternatives = tuple(
        code
        for code in (
            _language_code(item, "config.alternative_language_codes")
            for item in _strings(_field(config, "alternativeLanguageCodes"), "config.alternative_language_codes")
        )
        if code
    )
    render = RenderOptions(
        word_time_offsets=_boolean(_field(config, "enableWordTimeOffsets"), "config.enable_word_time_offsets"),
        word_confidence=_boolean(_field(config, "enableWordConfidence"), "config.enable_word_confidence"),
        punctuation=_boolean(_field(config, "enableAutomaticPunctuation"), "config.enable_automatic_punctuation"),
        separate_channels=separate,
        language_code=language_code,
        alternative_language_codes=alternatives,
        uri=uri,
    )
    model = _string(_field(config, "model"), "config.model")
    candidates = _candidates(language_code, alternatives)
    options = RecognitionOptions(
        model=model or None,
        language=_language(language_code, alternatives),
        detect_language=bool(candidates),
        language_candidates=candidates,
        hotwords=_phrases(_field(config, "speechContexts")),
        word_timestamps=True,  # the alternative's confidence is the mean of its words'
        channel_mode=ChannelMode.SEPARATE if separate else ChannelMode.MIX,
    )
    return RecognizeRequest(
        options=options,
        render=render,
        encoding=encoding,
        sample_rate_hz=sample_rate,
        channel_count=channel_count,
        content=content,
        uri=uri,
    )


def _audio_source(audio: Mapping[str, Any]) -> tuple[bytes | None, str | None]:
    content = _field(audio, "content")
    if content is not None:
        return _bytes(content, "audio.content"), None
    uri = _string(_field(audio, "uri"), "audio.uri")
    if not uri:
        raise InvalidRequest("Invalid recognition 'audio': RecognitionAudio not set.")
    if uri.lower().startswith("gs://"):
        raise InvalidRequest(
            "Invalid recognition 'audio': this server cannot read Google Cloud Storage (gs://) URIs; "
            "send the audio in audio.content, or an http(s) URI where the server allows remote audio."
        )
    return None, uri


def _language(code: str | None, alternatives: tuple[str, ...]) -> str | None:
    """The ISO 639-1 language to recognise: the primary one, or None (detection) when the
    alternatives name other languages (``es-MX`` and ``en-US`` -> detect; ``en-US`` and
    ``en-GB`` -> ``en``)."""
    if code is None:
        return None
    primary = language_base(code)
    if any(language_base(alternative) != primary for alternative in alternatives):
        return None
    return primary


def _candidates(code: str | None, alternatives: tuple[str, ...]) -> tuple[str, ...]:
    """The languages detection chooses among when the alternatives name other languages than
    the primary one (``es-MX`` + ``en-US`` -> ``es``, ``en``); () when the language is fixed."""
    if code is None:
        return ()
    languages = tuple(dict.fromkeys(language_base(c) for c in (code, *alternatives)))
    return languages if len(languages) > 1 else ()


def language_base(code: str) -> str:
    """``es-MX`` -> ``es``."""
    return re.split(r"[-_]", code, maxsplit=1)[0].lower()


def _phrases(value: Any) -> tuple[str, ...]:
    contexts = _list(value, "config.speech_contexts")
    phrases: list[str] = []
    for index, context in enumerate(contexts):
        where = f"config.speech_contexts[{index}]"
        if not isinstance(context, dict):
            raise _invalid(where, "type.googleapis.com/google.cloud.speech.v1.SpeechContext", context)
        phrases.extend(p.strip() for p in _strings(_field(context, "phrases"), f"{where}.phrases") if p.strip())
    return tuple(dict.fromkeys(phrases))


# --- proto3 JSON fields ------------------------------------------------------------------------


def _field(message: Mapping[str, Any], name: str) -> Any:
    """A field by its JSON (lowerCamelCase) name or its proto (snake_case) name."""
    if name in message:
        return message[name]
    return message.get(re.sub(r"([A-Z])", r"_\1", name).lower())


def _message(parent: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = _field(parent, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid value at '{where}', {json.dumps(value)}: a JSON object is expected.")
    return value


def _invalid(where: str, kind: str, value: Any) -> InvalidRequest:
    return InvalidRequest(f"Invalid value at '{where}' ({kind}), {json.dumps(value)[:80]}")


def _string(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(where, "TYPE_STRING", value)
    return value.strip()


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(where, "repeated", value)
    return value


def _strings(value: Any, where: str) -> list[str]:
    """A repeated string; a single comma-separated string is accepted too (FusionPBX sends
    ``alternativeLanguageCodes`` that way)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    items = _list(value, where)
    if not all(isinstance(item, str) for item in items):
        raise _invalid(where, "TYPE_STRING", value)
    return items


def _boolean(value: Any, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid(where, "TYPE_BOOL", value)


def _integer(value: Any, where: str, smallest: int, largest: int) -> int | None:
    """An int32 as a number or a numeric string; 0 is proto3's "unset"."""
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):  # int() refuses > 4300 digits
        number = int(value)
    if number is None:
        raise _invalid(where, "TYPE_INT32", value)
    if number == 0:
        return None
    if not smallest <= number <= largest:
        raise InvalidRequest(f"Invalid recognition 'config': {where.split('.')[-1]} must be between {smallest} and {largest}, not {number}.")
    return number


def _encoding(value: Any) -> str:
    kind = "type.googleapis.com/google.cloud.speech.v1.RecognitionConfig.AudioEncoding"
    if value is None:
        return AUDIO_ENCODINGS[0]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(AUDIO_ENCODINGS):
        return AUDIO_ENCODINGS[value]
    if isinstance(value, str):
        name = value.strip().upper()
        if name in AUDIO_ENCODINGS:
            return name
        index = ascii_whole(name)
        if index is not None and index < len(AUDIO_ENCODINGS):
            return AUDIO_ENCODINGS[index]
    raise _invalid("config.encoding", kind, value)


def _language_code(value: Any, where: str) -> str | None:
    code = _string(value, where)
    if not code:
        return None
    if not LANGUAGE_CODE.match(code):
        raise InvalidRequest(f"Invalid recognition 'config': bad language code {json.dumps(code)[:40]} at '{where}'.")
    return code


def _bytes(value: Any, where: str) -> bytes:
    """proto3 JSON bytes: standard or URL-safe base64, padded or not (line breaks tolerated)."""
    if not isinstance(value, str):
        raise _invalid(where, "TYPE_BYTES", value)
    text = value.replace("-", "+").replace("_", "/")
    if any(c in text for c in " \r\n\t"):
        text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed.") from exc


# --- responses --------------------------------------------------------------------------------


def transcript_of(job: Job) -> Transcript:
    """The ended job's transcript, or the error its failure answers with."""
    if job.status is JobStatus.DONE and job.transcript is not None:
        return job.transcript
    raise failure_error(job)


def failure_error(job: Job) -> CallpipeError:
    """A failed job's error: audio the worker could not decode is INVALID_ARGUMENT like at
    Google; anything else is :class:`JobFailed` (INTERNAL)."""
    message = job.error or "recognition failed"
    error_class = AUDIO_ERRORS.get(job.error_code or "")
    return error_class(message) if error_class is not None else JobFailed(message)


def request_id(job_id: str) -> str:
    """A positive int64 (as proto3 JSON writes int64: a string) derived from the job id."""
    return str(int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") >> 1)


def recognize_response(transcript: Transcript, render: RenderOptions, job_id: str) -> dict[str, Any]:
    """A ``RecognizeResponse``: one result per channel, so clients that read only
    ``results[0]`` get the whole text of a mono call. No speech: no ``results`` at all."""
    results = [
        result
        for tag, segments in _channel_groups(transcript, render.separate_channels)
        if (result := _result(segments, tag, transcript.language, render)) is not None
    ]
    document: dict[str, Any] = {"results": results} if results else {}
    document["totalBilledTime"] = f"{math.ceil(transcript.duration)}s"
    document["requestId"] = request_id(job_id)
    return document


def _channel_groups(transcript: Transcript, separate: bool) -> list[tuple[int | None, list[Segment]]]:
    """``(channelTag, segments)``: tags are 1-based and only present when the request asked for
    per-channel recognition."""
    if transcript.channels > 1:
        return [(index + 1, [s for s in transcript.segments if s.channel == index]) for index in range(transcript.channels)]
    return [(1 if separate else None, list(transcript.segments))]


def _result(segments: list[Segment], tag: int | None, language: str | None, render: RenderOptions) -> dict[str, Any] | None:
    text = " ".join(s.text.strip() for s in segments if s.text.strip())
    if not render.punctuation:
        text = unpunctuated(text)
    if not text:
        return None
    words = [w for s in segments for w in s.words]
    alternative: dict[str, Any] = {"transcript": text}
    confidence = _confidence(segments, words)
    if confidence is not None:
        alternative["confidence"] = confidence
    if render.word_time_offsets or render.word_confidence:
        alternative["words"] = [info for w in words if (info := _word_info(w, render)) is not None]
    result: dict[str, Any] = {"alternatives": [alternative]}
    if tag is not None:
        result["channelTag"] = tag
    result["resultEndTime"] = duration(max(s.end for s in segments))
    result_language = _result_language(language, render)
    if result_language:
        result["languageCode"] = result_language
    return result


def _word_info(word: Word, render: RenderOptions) -> dict[str, Any] | None:
    text = word.text.strip()
    if not render.punctuation:
        text = text.strip(PUNCTUATION)
    if not text:
        return None
    info: dict[str, Any] = {}
    if render.word_time_offsets:
        info["startTime"] = duration(word.start)
        info["endTime"] = duration(word.end)
    info["word"] = text
    if render.word_confidence and word.confidence is not None:
        info["confidence"] = word.confidence
    return info


def _confidence(segments: list[Segment], words: list[Word]) -> float | None:
    values = [w.confidence for w in words if w.confidence is not None]
    if not values:
        values = [s.confidence for s in segments if s.confidence is not None]
    return round(sum(values) / len(values), 4) if values else None


def _result_language(detected: str | None, render: RenderOptions) -> str | None:
    """The request's own locale for the detected language, lower-cased as Google writes it
    (``en-us``), else the detected ISO code."""
    for code in (render.language_code, *render.alternative_language_codes):
        if code and language_base(code) == detected:
            return code.lower()
    return detected or (render.language_code.lower() if render.language_code else None)


def unpunctuated(text: str) -> str:
    return " ".join(token for token in (t.strip(PUNCTUATION) for t in text.split()) if token)


def duration(seconds: float) -> str:
    """A ``google.protobuf.Duration`` in JSON: ``"1.500s"``, ``"2s"``."""
    millis = max(0, round(seconds * 1000))
    whole, fraction = divmod(millis, 1000)
    return f"{whole}s" if fraction == 0 else f"{whole}.{fraction:03d}s"


def timestamp(epoch_seconds: float) -> str:
    """A ``google.protobuf.Timestamp`` in JSON: ``"2024-01-01T00:00:00.123Z"``."""
    moment = dt.datetime.fromtimestamp(epoch_seconds, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def type_url(api_version: str, message: str) -> str:
    return f"type.googleapis.com/google.cloud.speech.{api_version}.{message}"


def operation_document(progress: JobProgress, api_version: str, now: float) -> dict[str, Any]:
    """A ``google.longrunning.Operation``. The SDK parses it strictly (unknown fields fail), so it
    holds only ``name``, ``metadata``, ``done`` and ``response`` or ``error``, with the exact
    ``@type`` of the API version asked."""
    job = progress.job
    render = RenderOptions.from_metadata(job.metadata)
    document: dict[str, Any] = {"name": job.id, "metadata": _operation_metadata(progress, api_version, now, render.uri)}
    if job.status is JobStatus.DONE and job.transcript is not None:
        document["done"] = True
        document["response"] = {
            "@type": type_url(api_version, "LongRunningRecognizeResponse"),
            **recognize_response(job.transcript, render, job.id),
        }
    elif job.status.is_final:
        error = failure_error(job)
        _, status = error_status(error)
        document["done"] = True
        document["error"] = {"code": GRPC_CODES[status], "message": error.message}
    return document


def _operation_metadata(progress: JobProgress, api_version: str, now: float, uri: str | None) -> dict[str, Any]:
    job = progress.job
    metadata: dict[str, Any] = {
        "@type": type_url(api_version, "LongRunningRecognizeMetadata"),
        "progressPercent": _progress_percent(progress, now),
        "startTime": timestamp(job.created_at),
        "lastUpdateTime": timestamp(job.finished_at or job.started_at or job.created_at),
    }
    if uri:
        metadata["uri"] = uri
    return metadata


def _progress_percent(progress: JobProgress, now: float) -> int:
    """100 once ended; while running, elapsed time against the service's estimate; else 0."""
    job = progress.job
    if job.status.is_final:
        return 100
    if job.status is JobStatus.RUNNING and job.started_at is not None and progress.estimated_seconds:
        elapsed = max(0.0, now - job.started_at)
        return min(99, int(100 * elapsed / (elapsed + progress.estimated_seconds)))
    return 0


def operations_document(jobs: list[Job], api_version: str, now: float) -> dict[str, Any]:
    """A ``ListOperationsResponse`` (one page: the newest operations)."""
    return {"operations": [operation_document(JobProgress(job, None, None), api_version, now) for job in jobs]}


# --- errors -----------------------------------------------------------------------------------


def missing_credentials() -> CallpipeError:
    """No key and no token: Google's 403 for an unidentified caller."""
    return PermissionDenied(MISSING_CREDENTIALS_MESSAGE)


def rejected_credentials(*, api_key_sent: bool) -> CallpipeError:
    """A key or token that is not ours: 400 API_KEY_INVALID for an API key, 401 for a token."""
    if api_key_sent:
        return ApiKeyNotValid(INVALID_KEY_MESSAGE)
    return AuthenticationFailed(INVALID_TOKEN_MESSAGE)


def error_status(error: CallpipeError) -> tuple[int, str]:
    """``(HTTP status, google.rpc.Code name)``. Everything about the request or its audio is
    400 INVALID_ARGUMENT as at Google (413/415 included); 429 for a full queue (the SDK retries
    503, which would re-upload the audio); 504 DEADLINE_EXCEEDED when a synchronous wait ran out."""
    if isinstance(error, (InvalidRequest, AudioError, PayloadTooLarge, UnsupportedMediaType, UnknownModel)):
        return 400, "INVALID_ARGUMENT"
    if isinstance(error, AuthenticationFailed):
        return 401, "UNAUTHENTICATED"
    if isinstance(error, PermissionDenied):
        return 403, "PERMISSION_DENIED"
    if isinstance(error, NotFound):
        return 404, "NOT_FOUND"
    if isinstance(error, QueueFull):
        return 429, "RESOURCE_EXHAUSTED"
    if isinstance(error, WaitTimeout):
        return 504, "DEADLINE_EXCEEDED"
    if isinstance(error, NotReady):
        return 503, "UNAVAILABLE"
    return 500, "INTERNAL"


def error_document(error: CallpipeError) -> dict[str, Any]:
    """``{"error": {"code", "message", "status", "details"?}}``, as
    ``google.api_core.exceptions.format_http_response_error`` reads it."""
    status, name = error_status(error)
    body: dict[str, Any] = {"code": status, "message": error.message, "status": name}
    details = _details(error)
    if details:
        body["details"] = details
    return {"error": body}


def _details(error: CallpipeError) -> list[dict[str, Any]]:
    if isinstance(error, ApiKeyNotValid):
        return [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "speech.googleapis.com"},
        }]
    if error.retry_after_seconds is not None:  # a full queue, a job store away for now
        return [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{error.retry_after_seconds}s"}]
    return []
