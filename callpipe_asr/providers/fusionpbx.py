"""FusionPBX voicemail transcription, every version's wire format (``docs/fusionpbx.md``).

- 5.3+ ``engine=local``: ``POST /transcribe``, OpenAI-style multipart (``file``, ``model``,
  ``response_format`` ``text`` for mono or ``json`` per channel). The body is the transcript.
- <= 5.0 Lua ``custom``: the same URL with only ``file``; plain text, or ``{"message": ...}``
  when ``?format=message`` or ``providers.fusionpbx_json_message`` says so.
- 5.1-5.2 ``custom`` (the an-transcriptions contract): ``POST /enqueue`` -> ``201 {"id"}``, then
  ``GET /j/<id>`` polled once a second until ``finished`` or ``failed``.
- 5.3+ ``engine=openai`` is served by the OpenAI dialect (``verbose_json`` with ``segments``).

FusionPBX never looks at a status code: whatever body it gets goes into the e-mail as the
transcript, so every failure here has an empty body (or, for the JSON shapes, their own empty
value). Pure translation; the HTTP side is ``web/routes_fusionpbx.py``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping, Sequence

from ..errors import CallpipeError, InvalidRequest, JobFailed, NotFound
from ..jobs import Job, JobStatus
from ..transcript import RecognitionOptions, Task, Transcript
from . import openai

DIALECT = "fusionpbx"
MESSAGE_QUERY_VALUE = "message"


class ReplyFormat(str, Enum):
    """What the body of ``/transcribe`` looks like."""

    TEXT = "text"
    """5.3+ mono and the Lua provider: the transcript itself."""
    JSON = "json"
    """5.3+ per-channel requests: ``{"text", "segments"}``; FusionPBX sorts the segments by start."""
    VERBOSE_JSON = "verbose_json"
    """OpenAI's shape, for installs whose ``api_url`` points here with ``engine=openai``'s format."""
    MESSAGE = "message"
    """The Lua provider with ``voicemail > json_enabled``: ``{"message": ...}``."""


SEGMENT_FORMATS = (ReplyFormat.JSON, ReplyFormat.VERBOSE_JSON)
"""Reply formats that show segments with their times."""

JOB_STATES = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "started",
    JobStatus.DONE: "finished",
    JobStatus.FAILED: "failed",
}
"""Our job states in an-transcriptions' (RQ's) words, which FusionPBX 5.1-5.2 compares against."""


def reply_format(query_format: str | None, response_format: str | None, message_by_default: bool) -> ReplyFormat:
    """The body format: ``?format=message`` first, then the ``response_format`` field, then the
    config (which only changes requests that name no format, so 5.3+ and Lua installs can share
    the endpoint)."""
    if query_format is not None and query_format.strip():
        if query_format.strip().lower() != MESSAGE_QUERY_VALUE:
            raise InvalidRequest(f"the query parameter 'format' may only be 'message', not {query_format!r}")
        return ReplyFormat.MESSAGE
    if response_format is not None and response_format.strip():
        try:
            return ReplyFormat(response_format.strip().lower())
        except ValueError as exc:
            raise InvalidRequest(
                f"'response_format' must be text, json or verbose_json, not {response_format!r}"
            ) from exc
    return ReplyFormat.MESSAGE if message_by_default else ReplyFormat.TEXT


def options_from_fields(fields: Mapping[str, Sequence[str]], fmt: ReplyFormat) -> RecognitionOptions:
    """The same optional fields as OpenAI's (``model``, ``language``, ``prompt``, ``temperature``);
    FusionPBX itself sends only ``model``, usually ``whisper-1``. No word timestamps: no reply
    format FusionPBX reads has words, and skipping Whisper's alignment pass saves time. Segment
    times only for the formats that show segments (``fmt``); text and messages are decoded
    without timestamp tokens, about 5 % faster."""
    return openai.options_from_fields(
        fields, Task.TRANSCRIBE, word_timestamps=False, segment_timestamps=fmt in SEGMENT_FORMATS
    )


def transcript_of(job: Job) -> Transcript:
    if job.status is JobStatus.DONE and job.transcript is not None:
        return job.transcript
    raise JobFailed(job.error or "the transcription failed")


def render_transcript(transcript: Transcript, fmt: ReplyFormat) -> dict[str, Any] | str:
    """The success body. Text has no trailing newline: the Lua provider e-mails the body as read."""
    if fmt is ReplyFormat.MESSAGE:
        return {"message": transcript.text}
    if fmt is ReplyFormat.JSON:
        # Always a list: FusionPBX's usort() on a channel without segments is a PHP TypeError.
        return {"text": transcript.text, "segments": openai.verbose_segments(transcript)}
    if fmt is ReplyFormat.VERBOSE_JSON:
        request = openai.AudioRequest(options=RecognitionOptions(), response_format="verbose_json")
        return openai.verbose_document(transcript, request)
    return transcript.text


def failure_body(fmt: ReplyFormat) -> dict[str, Any] | None:
    """What a failure carries: nothing, since FusionPBX mails any body as the transcript. The Lua
    provider in message mode JSON-decodes the body, so it gets an empty message instead."""
    return {"message": ""} if fmt is ReplyFormat.MESSAGE else None


def enqueued_document(job: Job) -> dict[str, Any]:
    return {"id": job.id}


def poll_document(job: Job) -> dict[str, Any]:
    """``GET /j/<id>``: FusionPBX reads ``status`` and, once ``finished``, ``result`` (the text)."""
    status = JOB_STATES[job.status]
    result = job.transcript.text if job.status is JobStatus.DONE and job.transcript is not None else None
    return {"status": status, "result": result}


def poll_failure(error: CallpipeError) -> tuple[int, dict[str, Any]]:
    """An unknown or expired id, a wrong key or any other error while polling, as a ``failed`` job.

    FusionPBX 5.1-5.2 polls in ``while (true)``: a body without a ``status`` it knows (an-
    transcriptions' ``404 {"error": "job not found"}``) makes it poll forever, and a body that is
    not JSON makes it re-poll at once without sleeping. ``failed`` is the one answer that ends
    the loop (it then re-submits the recording). Never a 404 either: the id it polls did exist.
    """
    status = 200 if isinstance(error, NotFound) else error.status
    return status, {"status": JOB_STATES[JobStatus.FAILED], "result": None}
