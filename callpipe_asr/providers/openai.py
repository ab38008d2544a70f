"""OpenAI's audio API: ``/v1/audio/transcriptions``, ``/v1/audio/translations``, ``/v1/models``.

Pure translation for the official SDK and every client that copies it (FusionPBX 5.2's
``openai_url``, 5.3+'s ``engine=openai``, LiteLLM...): multipart fields to
:class:`RecognitionOptions`, a :class:`Transcript` to ``json``/``text``/``srt``/``vtt``/
``verbose_json``/``diarized_json`` or server-sent events, our errors to OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``. Shapes follow ``docs/providers.md`` §1.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..engines import UnknownModel
from ..engines.selection import known_names
from ..errors import (
    AudioError, CallpipeError, EngineError, InvalidRequest, ModelNotInstalled, PayloadTooLarge, UnsupportedLanguage,
    UnsupportedMediaType, UnsupportedTask,
)
from ..formats import to_srt, to_text, to_vtt
from ..jobs import Job, JobStatus
from ..languages import WHISPER_LANGUAGE_NAMES
from ..settings import Settings
from ..transcript import RecognitionOptions, Segment, Task, Transcript

DIALECT = "openai"
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
TRANSLATION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TEXT_ONLY_FORMATS = ("json", "text")
"""Responses that show no times: their requests let Whisper decode text only."""
GRANULARITIES = ("word", "segment")
GRANULARITY_FIELDS = ("timestamp_granularities[]", "timestamp_granularities")
"""The SDK sends ``name[]`` parts; LiteLLM and others send the bare name, some a JSON list."""
MODEL_ALIASES = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize",
    "gpt-transcribe",
)
"""OpenAI's audio model names (the SDK's ``AudioModel``); clients hard-code them, so they run on
the default model, or on the multilingual one for other languages and for translations (see
:mod:`..engines.selection`), unless ``providers.strict_model_names`` is set and they are not
configured as aliases."""
MODEL_CREATED = 1677610602
"""Unix time given as every model's ``created``: whisper-1's on OpenAI, fixed so listings never change."""
MODEL_OWNER = "callpipe-asr"
LANGUAGE_CODE_MAX_CHARS = 16
SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keepalive\n\n"
"""An SSE comment: the SDK skips it, proxies see traffic while a long job runs."""
RETRY_HELPS_STATUSES = (408, 429)


OPENAI_CODES = {"queue_full": "rate_limit_exceeded"}
"""Our error codes that OpenAI spells differently; the rest (``invalid_api_key``,
``model_not_found``, ``timeout``...) pass through, so ``error.code`` is always a string."""


class InvalidField(InvalidRequest):
    """A form field OpenAI would refuse; ``param`` names it in the envelope."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class AudioRequest:
    """What a transcription or translation request asked for, in our words plus its wire format."""

    options: RecognitionOptions
    response_format: str
    granularities: frozenset[str] = frozenset()
    """``word`` and/or ``segment``; only ``verbose_json`` uses them."""
    stream: bool = False


@dataclass(frozen=True)
class ErrorReply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


# -- requests ---------------------------------------------------------------------------------


def parse_request(fields: Mapping[str, Sequence[str]], task: Task) -> AudioRequest:
    """A transcription (or translation) request from its multipart text fields.

    ``fields`` holds every value of each field, since ``timestamp_granularities[]`` repeats.
    """
    formats = TRANSCRIPTION_FORMATS if task is Task.TRANSCRIBE else TRANSLATION_FORMATS
    response_format = (_first(fields, "response_format") or "json").lower()
    if response_format not in formats:
        raise InvalidField(
            "response_format", f"'response_format' must be one of {', '.join(formats)}, not {response_format!r}"
        )
    stream = _boolean(fields, "stream") if task is Task.TRANSCRIBE else False
    granularities = parse_granularities(fields)
    options = options_from_fields(
        fields,
        task,
        word_timestamps="word" in granularities and task is Task.TRANSCRIBE,
        segment_timestamps=response_format not in TEXT_ONLY_FORMATS,
    )
    return AudioRequest(
        options=options,
        response_format=response_format,
        granularities=granularities,
        stream=stream,
    )


def options_from_fields(
    fields: Mapping[str, Sequence[str]],
    task: Task = Task.TRANSCRIBE,
    word_timestamps: bool = False,
    segment_timestamps: bool = True,
) -> RecognitionOptions:
    """``model``, ``language``, ``prompt`` (Whisper's vocabulary hint) and ``temperature``.

    Word timestamps only when the response carries words (``timestamp_granularities`` with
    ``word``): Whisper's word alignment is a second pass over every window, about a tenth of the
    recognition time, and no other response of this API shows words. Segment times only when
    it shows segments (not ``json`` or ``text``): decoding text only saves about 5 % more.
    """
    return RecognitionOptions(
        model=_first(fields, "model"),
        language=_language(fields),
        task=task,
        prompt=_first(fields, "prompt"),
        temperature=_temperature(fields),
        word_timestamps=word_timestamps,
        segment_timestamps=segment_timestamps,
    )


def parse_granularities(fields: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """``timestamp_granularities`` in its three spellings: repeated ``name[]`` parts, the bare
    name, or one value holding a list (``["word","segment"]``, ``['word']``, ``word,segment``)."""
    found: set[str] = set()
    for name in GRANULARITY_FIELDS:
        for value in fields.get(name, ()):
            for item in value.strip().strip("[]").split(","):
                token = item.strip().strip("'\"").strip().lower()
                if not token:
                    continue
                if token not in GRANULARITIES:
                    raise InvalidField(
                        "timestamp_granularities", f"timestamp granularities must be 'word' or 'segment', not {token!r}"
                    )
                found.add(token)
    return frozenset(found)


def _first(fields: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = fields.get(name) or ()
    value = values[-1].strip() if values else ""
    return value or None


def _language(fields: Mapping[str, Sequence[str]]) -> str | None:
    raw = _first(fields, "language")
    if raw is None:
        return None
    language = raw.split("-")[0].split("_")[0].lower()
    if not language.isalpha() or len(language) > LANGUAGE_CODE_MAX_CHARS:
        raise InvalidField("language", f"'language' must be an ISO-639-1 code such as 'en', not {raw!r}")
    return language


def _temperature(fields: Mapping[str, Sequence[str]]) -> float | None:
    raw = _first(fields, "temperature")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise InvalidField("temperature", f"'temperature' must be a number between 0 and 1, not {raw!r}")
    return value


def _boolean(fields: Mapping[str, Sequence[str]], name: str) -> bool:
    raw = (_first(fields, name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidField(name, f"'{name}' must be true or false, not {raw!r}")
    return raw in ("true", "1")


# -- responses --------------------------------------------------------------------------------


def transcript_of(job: Job) -> Transcript:
    """The ended job's transcript, or the error OpenAI would have answered for it."""
    if job.status is JobStatus.DONE and job.transcript is not None:
        return job.transcript
    raise failed_job_error(job)


def failed_job_error(job: Job) -> CallpipeError:
    """A failed job as an immediate error: audio the worker could not decode (it passed the
    probe but not the full decode) is the client's 400; anything else is ours (500)."""
    message = job.error or "the transcription failed"
    if job.error_code is not None and job.error_code in _audio_error_codes():
        error: CallpipeError = AudioError(message)
    else:
        error = EngineError(message)
    error.code = job.error_code or error.code
    return error


def _audio_error_codes() -> frozenset[str]:
    pending: list[type[CallpipeError]] = [AudioError]
    codes: set[str] = set()
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return frozenset(codes)


def render(transcript: Transcript, request: AudioRequest) -> dict[str, Any] | str:
    """The success body: a dict for the JSON formats, text for ``text``/``srt``/``vtt``."""
    fmt = request.response_format
    if fmt == "text":
        return to_text(transcript)
    if fmt == "srt":
        return to_srt(transcript)
    if fmt == "vtt":
        return to_vtt(transcript)
    if fmt == "verbose_json":
        return verbose_document(transcript, request)
    if fmt == "diarized_json":
        return diarized_document(transcript)
    return {"text": transcript.text, "usage": _usage(transcript)}


def verbose_document(transcript: Transcript, request: AudioRequest) -> dict[str, Any]:
    """whisper-1's ``verbose_json``: segments by default or with ``segment``, words with ``word``.

    Translations never carry words and always say ``english``, as OpenAI's do.
    """
    translate = request.options.task is Task.TRANSLATE
    document: dict[str, Any] = {
        "task": request.options.task.value,
        "language": "english" if translate else language_name(transcript.language),
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if "word" in request.granularities and not translate:
        document["words"] = _words(transcript)
    if "segment" in request.granularities or not request.granularities or translate:
        document["segments"] = verbose_segments(transcript, request.options.temperature)
    document["usage"] = _usage(transcript)
    return document


def verbose_segments(transcript: Transcript, temperature: float | None = None) -> list[dict[str, Any]]:
    """OpenAI's segment objects. Each text starts with a space, as Whisper's do, because clients
    (FusionPBX's ``engine=openai``) concatenate them without a separator. Channels transcribed
    apart are marked in an extra ``channel`` field and in the text."""
    split = transcript.channels > 1
    segments = []
    for index, segment in enumerate(transcript.segments):
        text = " " + _labelled(segment, split)
        item: dict[str, Any] = {
            "id": index,
            "seek": round(segment.start * 100),
            "start": segment.start,
            "end": segment.end,
            "text": text,
            "tokens": [],
            "temperature": temperature if temperature is not None else 0.0,
            "avg_logprob": segment.avg_logprob if segment.avg_logprob is not None else 0.0,
            "compression_ratio": _compression_ratio(text),
            "no_speech_prob": segment.no_speech_probability if segment.no_speech_probability is not None else 0.0,
        }
        if split:
            item["channel"] = segment.channel
        segments.append(item)
    return segments


def diarized_document(transcript: Transcript) -> dict[str, Any]:
    """``diarized_json``: each channel transcribed apart is a speaker (channel 0 is ``A``)."""
    return {
        "task": "transcribe",
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{index}",
                "start": segment.start,
                "end": segment.end,
                "speaker": chr(ord("A") + (segment.channel or 0)),
                "text": segment.text.strip(),
            }
            for index, segment in enumerate(transcript.segments)
            if segment.text.strip()
        ],
        "usage": _usage(transcript),
    }


def language_name(code: str | None) -> str:
    if not code:
        return "unknown"
    return WHISPER_LANGUAGE_NAMES.get(code, code)


def _words(transcript: Transcript) -> list[dict[str, Any]]:
    split = transcript.channels > 1
    words = []
    for segment in transcript.segments:
        for word in segment.words:
            item: dict[str, Any] = {"word": word.text.strip(), "start": word.start, "end": word.end}
            if split:
                item["channel"] = segment.channel
            words.append(item)
    return words


def _labelled(segment: Segment, split: bool) -> str:
    text = segment.text.strip()
    return f"[channel {segment.channel}] {text}" if split and text else text


def _compression_ratio(text: str) -> float:
    """Whisper's repetition measure: text bytes over their zlib-compressed size."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def _usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(transcript.duration)}


# -- streaming --------------------------------------------------------------------------------


def stream_events(transcript: Transcript) -> list[dict[str, Any]]:
    """``transcript.text.delta`` events whose deltas join to the text, then ``transcript.text.done``."""
    deltas = [{"type": "transcript.text.delta", "delta": piece} for piece in text_pieces(transcript)]
    return [*deltas, {"type": "transcript.text.done", "text": transcript.text}]


def text_pieces(transcript: Transcript) -> list[str]:
    """One piece per non-empty segment; their concatenation is exactly ``transcript.text``."""
    split = transcript.channels > 1
    separator = "\n" if split else " "
    pieces: list[str] = []
    for segment in transcript.segments:
        if not segment.text.strip():
            continue
        text = _labelled(segment, split)
        pieces.append(separator + text if pieces else text)
    return pieces


def sse_data(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\n\n"


def stream_error_event(error: CallpipeError) -> dict[str, Any]:
    """An error after the stream began: the SDK raises ``APIError`` on a ``data`` with ``error``."""
    return render_error(error).body


# -- errors -----------------------------------------------------------------------------------


def render_error(error: CallpipeError) -> ErrorReply:
    """OpenAI's envelope and status. Bad audio and a body that is not multipart are 400s there
    (not 415), and ``x-should-retry: false`` stops the SDK from re-uploading where a retry
    cannot help (it otherwise retries 408, 409, 429 and 5xx)."""
    status = error_status(error)
    body = {
        "error": {
            "message": error.message,
            "type": _error_type(status),
            "param": _error_param(error),
            "code": OPENAI_CODES.get(error.code, error.code),
        }
    }
    headers = {"x-should-retry": "false"} if 400 <= status < 500 and status not in RETRY_HELPS_STATUSES else {}
    return ErrorReply(status, body, headers)


def error_status(error: CallpipeError) -> int:
    if isinstance(error, (AudioError, UnsupportedMediaType)):
        return 400
    return error.status


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_exceeded"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _error_param(error: CallpipeError) -> str | None:
    if isinstance(error, InvalidField):
        return error.param
    if isinstance(error, UnsupportedLanguage):
        return "language"
    if isinstance(error, (UnknownModel, UnsupportedTask, ModelNotInstalled)):
        return "model"
    if isinstance(error, (AudioError, PayloadTooLarge)):
        return "file"
    return None


# -- models -----------------------------------------------------------------------------------


def model_names(settings: Settings) -> list[str]:
    """The configured models and their aliases, then OpenAI's names clients use (not in strict
    mode, where they are refused unless configured as aliases)."""
    names = known_names(settings)
    if not settings.providers.strict_model_names:
        names.extend(alias for alias in MODEL_ALIASES if alias not in names)
    return names


def model_list(settings: Settings) -> dict[str, Any]:
    return {"object": "list", "data": [_model(name) for name in model_names(settings)]}


def model_document(name: str, settings: Settings) -> dict[str, Any]:
    if name not in model_names(settings):
        raise UnknownModel(f"The model '{name}' does not exist or you do not have access to it.")
    return _model(name)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": MODEL_CREATED, "owned_by": MODEL_OWNER}
