"""callpipe-asr's own JSON API (``/api/v1/jobs``), used by scripts and the FreeSWITCH Lua.

Pure translation: form fields to :class:`RecognitionOptions`, jobs and errors to JSON documents.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any, Mapping

from ..engines.selection import can_detect, served_languages
from .fields import boolean_flag, optional_text
from ..errors import CallpipeError, InvalidRequest
from ..jobs import JobProgress
from ..languages import WHISPER_LANGUAGE_NAMES, WHISPER_LANGUAGES
from ..settings import Settings
from ..transcript import ChannelMode, RecognitionOptions, Task

LANGUAGE_CODE_MAX_CHARS = 16
AUTO_LANGUAGE = "auto"
"""``language=auto``: detect the language (with a multilingual model)."""


def options_from_fields(fields: Mapping[str, str]) -> RecognitionOptions:
    """Recognition options from the form fields ``language`` (an ISO code, or ``auto`` to have
    it detected), ``task`` (``transcribe``, or ``translate`` into English), ``model``, ``prompt``,
    ``channels``, ``word_timestamps`` (``false`` skips Whisper's word alignment pass, about a
    tenth of the recognition time) and ``segment_timestamps`` (``false`` with it: Whisper decodes
    text only, about 5 % faster, and segments span up to 30 s of speech), for clients that
    read only the text, like the voicemail Lua."""
    language = optional_text(fields, "language")
    detect = language is not None and language.lower() == AUTO_LANGUAGE
    if detect:
        language = None
    if language is not None:
        language = language.split("-")[0].split("_")[0].lower()
        if not language.isalpha() or len(language) > LANGUAGE_CODE_MAX_CHARS:
            raise InvalidRequest(f"'language' must be a language code such as 'en', not {fields['language']!r}")
    channels = optional_text(fields, "channels") or ChannelMode.AUTO.value
    try:
        channel_mode = ChannelMode(channels)
    except ValueError as exc:
        raise InvalidRequest(f"'channels' must be one of auto, mix, separate, not {channels!r}") from exc
    task_name = (optional_text(fields, "task") or Task.TRANSCRIBE.value).lower()
    try:
        task = Task(task_name)
    except ValueError as exc:
        raise InvalidRequest(f"'task' must be transcribe or translate, not {task_name[:40]!r}") from exc
    return RecognitionOptions(
        model=optional_text(fields, "model"),
        language=language,
        task=task,
        detect_language=detect,
        prompt=optional_text(fields, "prompt"),
        channel_mode=channel_mode,
        word_timestamps=_flag(fields, "word_timestamps"),
        segment_timestamps=_flag(fields, "segment_timestamps"),
    )


def _flag(fields: Mapping[str, str], name: str) -> bool:
    """``word_timestamps``, ``segment_timestamps``: true unless the client says otherwise (the
    job's words and segment times are part of the native document)."""
    if optional_text(fields, name) is None:
        return True
    return boolean_flag(fields, name, "'{name}' must be true or false, not {raw!r}")


def language_menu(settings: Settings, installed: Collection[str]) -> list[tuple[str, str]]:
    """(value, label) for the upload page's language menu: ``auto`` where an installed model can
    detect, then every language the installed models speak, by name."""
    served = served_languages(settings, installed)
    codes = sorted(WHISPER_LANGUAGES) if served is None else list(served)
    menu = sorted(((code, WHISPER_LANGUAGE_NAMES.get(code, code).title()) for code in codes), key=lambda item: item[1])
    if any(can_detect(settings.models[name]) for name in installed if name in settings.models):
        menu.insert(0, (AUTO_LANGUAGE, "Detect the language"))
    return menu


def wait_seconds_from_fields(fields: Mapping[str, str], maximum: float) -> float:
    raw = optional_text(fields, "wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError as exc:
        raise InvalidRequest(f"'wait' must be a number of seconds, not {raw!r}") from exc
    if value < 0:
        raise InvalidRequest("'wait' must not be negative")
    return min(value, maximum)


def job_links(job_id: str) -> dict[str, str]:
    return {
        "self": f"/api/v1/jobs/{job_id}",
        "page": f"/transcripts/{job_id}",
        "text": f"/transcripts/{job_id}.txt",
        "srt": f"/transcripts/{job_id}.srt",
        "vtt": f"/transcripts/{job_id}.vtt",
    }


def job_document(progress: JobProgress) -> dict[str, Any]:
    job = progress.job
    return {
        "id": job.id,
        "status": job.status.value,
        "queue_position": progress.queue_position,
        "estimated_seconds": round(progress.estimated_seconds, 1) if progress.estimated_seconds is not None else None,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "expires_at": _iso(job.expires_at),
        "attempts": job.attempts,
        "filename": job.filename,
        "audio_duration": job.audio_duration,
        "options": job.options.to_dict(),
        "error": {"code": job.error_code, "message": job.error} if job.error else None,
        "transcript": job.transcript.to_dict() if job.transcript else None,
        "links": job_links(job.id),
    }


def accepted_document(progress: JobProgress) -> dict[str, Any]:
    return {"id": progress.job.id, "status": progress.job.status.value, "links": job_links(progress.job.id)}


def error_document(error: CallpipeError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message, "status": error.status}}


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
