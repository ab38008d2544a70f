"""AssemblyAI v2: uploads, transcripts, their listing, subtitles, sentences and paragraphs.

Pure translation: a ``POST /v2/transcript`` body to our options (and the request fields every
transcript body echoes, kept in the job's metadata), jobs to transcript bodies with word times
in milliseconds, the list page, SRT/VTT, sentences and paragraphs, the webhook, and our errors to
``{"error": "..."}``. See docs/providers.md section 6 and the SDK's ``types.py``
(``TranscriptResponse``, ``ListTranscriptResponse``, ``SentencesResponse``...).

Job states in AssemblyAI's words: queued, processing, completed, error. Audio the server cannot
use is, as at AssemblyAI, a transcript whose status is ``error`` (the SDK's ``transcribe()``
returns it), not a failed HTTP request; the routes keep such transcripts as records beside the
jobs (:func:`rejected_document`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit

from ..engines import UnknownModel
from ..errors import AudioError, AudioTooLong, AuthenticationFailed, CallpipeError, InvalidRequest, UnsupportedMediaType
from ..formats import to_srt, to_vtt
from ..jobs import Job, JobStatus
from ..transcript import ChannelMode, RecognitionOptions, Segment, Transcript, Word
from .numbers import ascii_whole

DIALECT = "assemblyai"
STATUS_WORDS = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "processing",
    JobStatus.DONE: "completed",
    JobStatus.FAILED: "error",
}
ERROR_STATUS = "error"
UPLOAD_PATH = re.compile(r"/v2/upload/(?P<token>[A-Za-z0-9_-]{16,64})$")
"""The path of the ``upload_url`` this server hands out (under any prefix)."""
LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")
BOOST_PARAMS = ("low", "default", "high")
DEFAULT_LIST_LIMIT = 10
MAX_LIST_LIMIT = 200
LISTED_STATUSES = tuple(STATUS_WORDS.values())
PUNCTUATION = ".,?!;:…\"¿¡"
SENTENCE_END = (".", "?", "!", "…")
PARAGRAPH_PAUSE_SECONDS = 2.0
"""A silence this long between two sentences starts a new paragraph."""
SPEAKER_LABEL = "A"
"""Speakers are not told apart (no diarization): with ``speaker_labels`` every utterance is A."""
AUTH_MESSAGE = "Authentication error, API token missing/invalid"
NOT_FOUND_MESSAGE = "Transcript lookup error, transcript id not found"
DELETED_AUDIO_URL = "http://deleted_by_user"
DELETED_TEXT = "Deleted by user."


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderOptions:
    """The request fields a transcript body echoes and renders by; stored in the job's metadata."""

    audio_url: str
    language_code: str | None = None
    language_detection: bool = False
    punctuate: bool = True
    format_text: bool = True
    multichannel: bool = False
    speaker_labels: bool = False
    word_boost: tuple[str, ...] = ()
    boost_param: str | None = None
    speech_model: str | None = None
    webhook_url: str | None = None
    webhook_auth_header_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["word_boost"] = list(self.word_boost)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["word_boost"] = tuple(values.get("word_boost") or ())
        return cls(**values)


@dataclass(frozen=True)
class TranscriptRequest:
    options: RecognitionOptions
    render: RenderOptions
    webhook_auth_header_value: str | None = dataclasses.field(default=None, repr=False)

    def job_metadata(self) -> dict[str, Any]:
        """The job's metadata: the echoed fields, and the webhook secret (never echoed)."""
        return {"request": self.render.to_dict(), "webhook_auth_header_value": self.webhook_auth_header_value}


def parse_transcript_request(body: bytes) -> TranscriptRequest:
    """A ``POST /v2/transcript`` body. Features this server does not perform (summaries, PII
    redaction...) are ignored, as unknown fields are."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: deeply nested JSON
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidRequest("the request body must be a JSON object")
    audio_url = _text(document, "audio_url")
    if not audio_url:
        raise InvalidRequest("audio_url is required")
    language_code = _language_code(document)
    language_detection = _flag(document, "language_detection", False)
    multichannel = _flag(document, "multichannel", False) or _flag(document, "dual_channel", False)
    webhook_header = _text(document, "webhook_auth_header_name")
    webhook_secret = _text(document, "webhook_auth_header_value")
    if bool(webhook_header) != bool(webhook_secret):
        raise InvalidRequest("webhook_auth_header_name and webhook_auth_header_value must be given together")
    render = RenderOptions(
        audio_url=audio_url,
        language_code=language_code,
        language_detection=language_detection,
        punctuate=_flag(document, "punctuate", True),
        format_text=_flag(document, "format_text", True),
        multichannel=multichannel,
        speaker_labels=_flag(document, "speaker_labels", False),
        word_boost=_words_list(document, "word_boost"),
        boost_param=_boost_param(document),
        speech_model=_speech_model(document),
        webhook_url=_text(document, "webhook_url"),
        webhook_auth_header_name=webhook_header,
    )
    options = RecognitionOptions(
        model=render.speech_model,
        language=None if language_detection or not language_code else re.split(r"[-_]", language_code)[0].lower(),
        detect_language=language_detection,
        language_candidates=_expected_languages(document) if language_detection else (),
        prompt=_text(document, "prompt"),
        hotwords=tuple(dict.fromkeys(render.word_boost + _words_list(document, "keyterms_prompt"))),
        temperature=_temperature(document),
        word_timestamps=True,
        channel_mode=ChannelMode.SEPARATE if multichannel else ChannelMode.MIX,
    )
    return TranscriptRequest(options=options, render=render, webhook_auth_header_value=webhook_secret)


def upload_token(audio_url: str) -> str | None:
    """The upload id in an ``upload_url`` of this server's shape, else None."""
    try:
        path = urlsplit(audio_url).path
    except ValueError:  # "https://example]com/": no URL of ours; the remote-URL check refuses it (400)
        return None
    match = UPLOAD_PATH.search(path)
    return match.group("token") if match else None


def _text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value.strip() or None


def _flag(document: Mapping[str, Any], name: str, default: bool) -> bool:
    value = document.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false")
    return value


def _words_list(document: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = document.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRequest(f"{name} must be a list of strings")
    return tuple(item.strip() for item in value if item.strip())


def _language_code(document: Mapping[str, Any]) -> str | None:
    code = _text(document, "language_code")
    if code is not None and not LANGUAGE.match(code):
        raise InvalidRequest(f"language_code must be a language code such as en_us, not {code[:40]!r}")
    return code


def _expected_languages(document: Mapping[str, Any]) -> tuple[str, ...]:
    """``language_detection_options.expected_languages`` (``["es", "en_us"]``) as ISO codes:
    detection chooses among them."""
    options = document.get("language_detection_options")
    if options is None:
        return ()
    if not isinstance(options, dict):
        raise InvalidRequest("language_detection_options must be an object")
    codes = _words_list(options, "expected_languages")
    for code in codes:
        if not LANGUAGE.match(code):
            raise InvalidRequest(f"expected_languages must hold language codes such as en_us, not {code[:40]!r}")
    return tuple(dict.fromkeys(re.split(r"[-_]", code)[0].lower() for code in codes))


def _boost_param(document: Mapping[str, Any]) -> str | None:
    value = _text(document, "boost_param")
    if value is not None and value not in BOOST_PARAMS:
        raise InvalidRequest(f"boost_param must be one of {', '.join(BOOST_PARAMS)}")
    return value


def _speech_model(document: Mapping[str, Any]) -> str | None:
    """``speech_model``, or the first of the newer ``speech_models`` list."""
    single = _text(document, "speech_model")
    return single or next(iter(_words_list(document, "speech_models")), None)


def _temperature(document: Mapping[str, Any]) -> float | None:
    value = document.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidRequest("temperature must be a number between 0 and 1")
    return float(value)


# --- transcripts ------------------------------------------------------------------------------


def render_options(job: Job) -> RenderOptions:
    return RenderOptions.from_dict(job.metadata.get("request") or {"audio_url": ""})


def transcript_document(job: Job) -> dict[str, Any]:
    """The transcript body ``GET /v2/transcript/{id}`` answers (and ``POST`` at creation)."""
    render = render_options(job)
    document = _base_document(job.id, STATUS_WORDS[job.status], render)
    document["webhook_auth"] = bool(render.webhook_auth_header_name)
    if job.status is JobStatus.DONE and job.transcript is not None:
        document.update(_results(job.transcript, render))
    elif job.status is JobStatus.FAILED:
        document["error"] = job.error or "recognition failed"
    return document


def rejected_document(transcript_id: str, request: TranscriptRequest, message: str) -> dict[str, Any]:
    """A transcript whose audio could not be used (undecodable, or a URL that failed): status
    ``error`` with the reason, as AssemblyAI reports transcoding and download failures."""
    document = _base_document(transcript_id, ERROR_STATUS, request.render)
    document["webhook_auth"] = bool(request.render.webhook_auth_header_name)
    document["error"] = message
    return document


def rejected_record(document: dict[str, Any], created_at: float) -> dict[str, Any]:
    """How a rejected transcript is kept: its body and when it was made (for the list)."""
    return {"created_at": created_at, "document": document}


def listed_record(record: Mapping[str, Any]) -> ListedTranscript:
    document = record["document"]
    return ListedTranscript(
        id=document["id"],
        created_at=record["created_at"],
        status=ERROR_STATUS,
        audio_url=document["audio_url"],
        completed_at=record["created_at"],
        error=document["error"],
    )


def deleted_document(document: dict[str, Any]) -> dict[str, Any]:
    """What ``DELETE`` answers: the transcript with its audio URL and results removed."""
    removed = dict(document)
    removed.update(audio_url=DELETED_AUDIO_URL, text=DELETED_TEXT, words=None, utterances=None)
    return removed


def _base_document(transcript_id: str, status: str, render: RenderOptions) -> dict[str, Any]:
    return {
        "id": transcript_id,
        "status": status,
        "audio_url": render.audio_url,
        "language_code": render.language_code,
        "language_detection": render.language_detection,
        "punctuate": render.punctuate,
        "format_text": render.format_text,
        "multichannel": render.multichannel,
        "speaker_labels": render.speaker_labels,
        "word_boost": list(render.word_boost),
        "boost_param": render.boost_param,
        "speech_model": render.speech_model,
        "webhook_url": render.webhook_url,
        "webhook_auth_header_name": render.webhook_auth_header_name,
        "webhook_status_code": None,
        "text": None,
        "words": None,
        "utterances": None,
        "confidence": None,
        "audio_duration": None,
        "error": None,
    }


def _results(transcript: Transcript, render: RenderOptions) -> dict[str, Any]:
    spoken = [s for s in transcript.segments if s.text.strip()]
    words = [_word(w, s, render) for s in spoken for w in s.words]
    words = [w for w in words if w["text"]]
    results: dict[str, Any] = {
        "text": _styled(" ".join(s.text.strip() for s in spoken), render),
        "words": words,
        "utterances": [_utterance(s, render) for s in spoken] if render.multichannel or render.speaker_labels else None,
        "confidence": _mean([w["confidence"] for w in words]),
        "audio_duration": round(transcript.duration),
        "language_code": transcript.language if render.language_detection else render.language_code or transcript.language,
        "speech_model_used": transcript.model,
    }
    if render.language_detection:
        results["language_confidence"] = transcript.language_confidence
    if render.multichannel:
        results["audio_channels"] = transcript.channels
    return results


def _word(word: Word, segment: Segment, render: RenderOptions) -> dict[str, Any]:
    return {
        "text": _styled(word.text.strip(), render),
        "start": milliseconds(word.start),
        "end": milliseconds(word.end),
        "confidence": word.confidence if word.confidence is not None else 0.0,
        "speaker": _speaker(segment, render),
        "channel": _channel(segment, render),
    }


def _utterance(segment: Segment, render: RenderOptions) -> dict[str, Any]:
    words = [w for w in (_word(word, segment, render) for word in segment.words) if w["text"]]
    return {
        "text": _styled(segment.text.strip(), render),
        "start": milliseconds(segment.start),
        "end": milliseconds(segment.end),
        "confidence": _mean([w["confidence"] for w in words]) or segment.confidence or 0.0,
        "speaker": _speaker(segment, render),
        "channel": _channel(segment, render),
        "words": words,
    }


def _speaker(segment: Segment, render: RenderOptions) -> str | None:
    """With ``speaker_labels``: the channel's letter for split channels, else A."""
    if not render.speaker_labels:
        return None
    return chr(ord(SPEAKER_LABEL) + segment.channel) if segment.channel is not None else SPEAKER_LABEL


def _channel(segment: Segment, render: RenderOptions) -> str | None:
    """AssemblyAI numbers channels from 1, as strings."""
    return str(segment.channel + 1) if render.multichannel and segment.channel is not None else None


def _styled(text: str, render: RenderOptions) -> str:
    """``punctuate: false`` drops punctuation, ``format_text: false`` the casing."""
    if not render.punctuate:
        text = " ".join(t for t in (token.strip(PUNCTUATION) for token in text.split()) if t)
    return text if render.format_text else text.lower()


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def milliseconds(seconds: float) -> int:
    return max(0, round(seconds * 1000))


# --- sentences, paragraphs, subtitles ---------------------------------------------------------


def completed_transcript(job: Job) -> Transcript:
    """The transcript of a completed job; the exports of any other are refused (400)."""
    if job.status is JobStatus.DONE and job.transcript is not None:
        return job.transcript
    raise InvalidRequest(f"transcript {job.id} is {STATUS_WORDS[job.status]}; it has no text to export yet")


def sentences_document(job: Job) -> dict[str, Any]:
    transcript = completed_transcript(job)
    render = render_options(job)
    sentences = [_span(words, render) for words in _sentences(transcript)]
    return _export(job, transcript, "sentences", sentences)


def paragraphs_document(job: Job) -> dict[str, Any]:
    """Paragraphs are sentences joined until a pause of :data:`PARAGRAPH_PAUSE_SECONDS` or a
    change of channel."""
    transcript = completed_transcript(job)
    render = render_options(job)
    paragraphs: list[list[tuple[Word, Segment]]] = []
    for sentence in _sentences(transcript):
        previous = paragraphs[-1][-1] if paragraphs else None
        if previous is None or previous[1].channel != sentence[0][1].channel or (
            sentence[0][0].start - previous[0].end >= PARAGRAPH_PAUSE_SECONDS
        ):
            paragraphs.append([])
        paragraphs[-1].extend(sentence)
    return _export(job, transcript, "paragraphs", [_span(words, render) for words in paragraphs])


def _export(job: Job, transcript: Transcript, key: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: spans,
        "id": job.id,
        "confidence": _mean([span["confidence"] for span in spans]) or 0.0,
        "audio_duration": transcript.duration,
    }


def _sentences(transcript: Transcript) -> list[list[tuple[Word, Segment]]]:
    """Words grouped into sentences: each ends at ``.?!`` or where its channel's segment ends
    without one (a sentence never spans two channels)."""
    sentences: list[list[tuple[Word, Segment]]] = []
    for segment in transcript.segments:
        current: list[tuple[Word, Segment]] = []
        for word in segment.words:
            if not word.text.strip():
                continue
            current.append((word, segment))
            if word.text.strip().endswith(SENTENCE_END):
                sentences.append(current)
                current = []
        if current:
            sentences.append(current)
    return sentences


def _span(pairs: list[tuple[Word, Segment]], render: RenderOptions) -> dict[str, Any]:
    words = [w for w in (_word(word, segment, render) for word, segment in pairs) if w["text"]]
    segment = pairs[0][1]
    return {
        "text": " ".join(w["text"] for w in words),
        "start": milliseconds(pairs[0][0].start),
        "end": milliseconds(pairs[-1][0].end),
        "confidence": _mean([w["confidence"] for w in words]) or 0.0,
        "speaker": _speaker(segment, render),
        "channel": _channel(segment, render),
        "words": words,
    }


def subtitles(job: Job, subtitle_format: str, chars_per_caption: int | None) -> str:
    """SRT or VTT: one caption per segment, or, with ``chars_per_caption``, captions of whole
    words up to that many characters each."""
    transcript = completed_transcript(job)
    if chars_per_caption:
        transcript = dataclasses.replace(transcript, segments=tuple(_captions(transcript, chars_per_caption)))
    return to_srt(transcript) if subtitle_format == "srt" else to_vtt(transcript)


def _captions(transcript: Transcript, chars_per_caption: int) -> list[Segment]:
    captions: list[Segment] = []
    for segment in transcript.segments:
        words: list[Word] = []
        for word in (w for w in segment.words if w.text.strip()):
            if words and len(_joined(words + [word])) > chars_per_caption:
                captions.append(_caption(words, segment))
                words = []
            words.append(word)
        if words:
            captions.append(_caption(words, segment))
    return captions


def _caption(words: list[Word], segment: Segment) -> Segment:
    return Segment(text=_joined(words), start=words[0].start, end=words[-1].end, channel=segment.channel)


def _joined(words: list[Word]) -> str:
    return " ".join(w.text.strip() for w in words)


def parse_chars_per_caption(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    value = ascii_whole(raw.strip())
    if value is None or value < 1:
        raise InvalidRequest("chars_per_caption must be a positive whole number")
    return value


# --- listing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedTranscript:
    """One row of the list: a job's, or a rejected transcript's."""

    id: str
    created_at: float
    status: str
    audio_url: str
    completed_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ListQuery:
    limit: int = DEFAULT_LIST_LIMIT
    status: str | None = None
    created_on: str | None = None
    before_id: str | None = None
    after_id: str | None = None


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    raw_limit = query.get("limit")
    limit = DEFAULT_LIST_LIMIT
    if raw_limit:
        value = ascii_whole(raw_limit)
        if value is None or not 1 <= value <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
        limit = value
    status = query.get("status") or None
    if status is not None and status not in LISTED_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(LISTED_STATUSES)}")
    created_on = query.get("created_on") or None
    if created_on is not None:
        try:
            dt.date.fromisoformat(created_on)
        except ValueError as exc:
            raise InvalidRequest("created_on must be a date such as 2024-01-31") from exc
    return ListQuery(limit, status, created_on, query.get("before_id") or None, query.get("after_id") or None)


def listed_job(job: Job) -> ListedTranscript:
    return ListedTranscript(
        id=job.id,
        created_at=job.created_at,
        status=STATUS_WORDS[job.status],
        audio_url=render_options(job).audio_url,
        completed_at=job.finished_at if job.status.is_final else None,
        error=job.error if job.status is JobStatus.FAILED else None,
    )


def list_document(rows: list[ListedTranscript], query: ListQuery, base_url: str) -> dict[str, Any]:
    """A ``ListTranscriptResponse``, newest first. ``prev_url`` pages to older transcripts
    (``before_id``), ``next_url`` to newer ones (``after_id``); ``base_url`` is where the
    list is served (``http://host/v2/transcript``)."""
    matching = sorted((r for r in rows if _matches(r, query)), key=lambda r: r.created_at, reverse=True)
    page, older, newer = _page(matching, query)
    return {
        "page_details": {
            "limit": query.limit,
            "result_count": len(page),
            "current_url": _list_url(base_url, query, {}),
            "prev_url": _list_url(base_url, query, {"before_id": page[-1].id}) if page and older else None,
            "next_url": _list_url(base_url, query, {"after_id": page[0].id}) if page and newer else None,
        },
        "transcripts": [_item(row, base_url) for row in page],
    }


def _matches(row: ListedTranscript, query: ListQuery) -> bool:
    if query.status is not None and row.status != query.status:
        return False
    return query.created_on is None or _iso(row.created_at).startswith(query.created_on)


def _page(rows: list[ListedTranscript], query: ListQuery) -> tuple[list[ListedTranscript], bool, bool]:
    """``(page, older rows remain, newer rows remain)``."""
    ids = [r.id for r in rows]
    if query.before_id is not None:
        start = ids.index(query.before_id) + 1 if query.before_id in ids else len(rows)
        page = rows[start : start + query.limit]
        return page, start + query.limit < len(rows), start > 0
    if query.after_id is not None:
        end = ids.index(query.after_id) if query.after_id in ids else 0
        begin = max(0, end - query.limit)
        return rows[begin:end], end < len(rows), begin > 0
    return rows[: query.limit], query.limit < len(rows), False


def _list_url(base_url: str, query: ListQuery, cursor: dict[str, str]) -> str:
    params = {"limit": str(query.limit)}
    if query.status:
        params["status"] = query.status
    if query.created_on:
        params["created_on"] = query.created_on
    if not cursor:
        params.update({k: v for k, v in (("before_id", query.before_id), ("after_id", query.after_id)) if v})
    params.update(cursor)
    return f"{base_url}?{urlencode(params)}"


def _item(row: ListedTranscript, base_url: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "resource_url": f"{base_url}/{row.id}",
        "status": row.status,
        "created": _iso(row.created_at),
        "completed": _iso(row.completed_at) if row.completed_at is not None else None,
        "audio_url": row.audio_url,
        "error": row.error,
    }


def _iso(timestamp: float) -> str:
    """``2023-11-02T21:49:25.586965``: UTC without a zone, as AssemblyAI lists times."""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


# --- webhooks and errors ----------------------------------------------------------------------


def callback_payload(job: Job) -> tuple[bytes, dict[str, str]]:
    """AssemblyAI's webhook: ``{"transcript_id", "status"}``, with the client's own auth header
    when it set ``webhook_auth_header_name``/``_value``."""
    body = json.dumps({"transcript_id": job.id, "status": STATUS_WORDS[job.status]}).encode()
    headers = {"Content-Type": "application/json"}
    name = render_options(job).webhook_auth_header_name
    value = job.metadata.get("webhook_auth_header_value")
    if name and isinstance(value, str):
        headers[name] = value
    return body, headers


def error_status(error: CallpipeError) -> int:
    """AssemblyAI's status: any missing or wrong key is 401; an unknown ``speech_model`` and a
    body it cannot use are 400."""
    if isinstance(error, AuthenticationFailed):
        return 401
    if isinstance(error, (UnknownModel, UnsupportedMediaType)):
        return 400
    if isinstance(error, AudioError) and not isinstance(error, AudioTooLong):
        return 400
    return error.status


def error_document(error: CallpipeError) -> dict[str, str]:
    """``{"error": "..."}``: the SDK raises with ``response.json()["error"]`` as its message."""
    return {"error": AUTH_MESSAGE if isinstance(error, AuthenticationFailed) else error.message}
