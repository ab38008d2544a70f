"""Microsoft Azure Speech, REST API for short audio, and its token endpoint.

Pure translation: the query (``language``, ``format``, ``profanity``) to our options, a
transcript to the ``simple`` or ``detailed`` result, our errors to Azure's statuses and its
gateway's ``{"error": {"code", "message"}}`` body, and the access tokens of
``/sts/v1.0/issueToken``. See docs/providers.md section 3.

No speech is not an error in this API: it is HTTP 200 with ``RecognitionStatus``
``InitialSilenceTimeout`` (nothing was heard) or ``NoMatch`` (sound, but no words), which is
what PBX scripts test for.

Tokens are JWTs (HS256) signed with a secret the application generates at start-up: valid for
10 minutes like Azure's, naming the key's owner, and useless after a restart or on another
server process (clients fetch a new one, as they do every 9 minutes anyway).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from ..errors import (
    AudioError,
    AudioTooLong,
    AuthenticationFailed,
    CallpipeError,
    CorruptAudio,
    EmptyAudio,
    InvalidRequest,
    JobFailed,
    PermissionDenied,
    TooManyChannels,
    UnsupportedAudio,
    UnsupportedMediaType,
)
from ..jobs import Job, JobStatus
from ..transcript import ChannelMode, RecognitionOptions, Segment, Transcript

DIALECT = "azure"
MODES = ("conversation", "interactive", "dictation")
"""Recognition modes in the path; all three are the same recognition here."""
TOKEN_LIFETIME_SECONDS = 600
"""Azure's tokens are valid for 10 minutes."""
TOKEN_ISSUER = "callpipe-asr"
TOKEN_CONTENT_TYPE = "application/jwt"
TICKS_PER_SECOND = 10_000_000
"""Offsets and durations are in 100-nanosecond ticks."""
LANGUAGE = re.compile(r"^([A-Za-z]{2,3})([-_][A-Za-z0-9]{1,8})*$")
PROFANITY_MODES = ("masked", "removed", "raw")
PUNCTUATION = ".,?!;:…\"¿¡"
"""Stripped from word edges for the lexical forms (apostrophes and inner points stay)."""
AUDIO_ERRORS: dict[str, type[AudioError]] = {
    cls.code: cls for cls in (AudioError, EmptyAudio, CorruptAudio, UnsupportedAudio, TooManyChannels, AudioTooLong)
}
MISSING_KEY_MESSAGE = (
    "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."
)
INVALID_KEY_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)


class ResultFormat(str, Enum):
    SIMPLE = "simple"
    DETAILED = "detailed"


class RecognitionStatus(str, Enum):
    SUCCESS = "Success"
    NO_MATCH = "NoMatch"
    INITIAL_SILENCE_TIMEOUT = "InitialSilenceTimeout"
    ERROR = "Error"


@dataclass(frozen=True)
class ShortAudioRequest:
    options: RecognitionOptions
    result_format: ResultFormat


def parse_query(query: Mapping[str, str]) -> ShortAudioRequest:
    """``language`` (required, ``en-US``), ``format`` (``simple``|``detailed``) and
    ``profanity`` (``masked``|``removed``|``raw``; accepted, but no filter is applied)."""
    language = (query.get("language") or "").strip()
    if not language:
        raise InvalidRequest("the query parameter 'language' is required (for example language=en-US)")
    if not LANGUAGE.match(language):
        raise InvalidRequest(f"'language' must be a locale such as en-US, not {language[:40]!r}")
    raw_format = (query.get("format") or ResultFormat.SIMPLE.value).strip().lower()
    try:
        result_format = ResultFormat(raw_format)
    except ValueError as exc:
        raise InvalidRequest(f"'format' must be simple or detailed, not {raw_format[:40]!r}") from exc
    profanity = (query.get("profanity") or PROFANITY_MODES[0]).strip().lower()
    if profanity not in PROFANITY_MODES:
        raise InvalidRequest(f"'profanity' must be one of {', '.join(PROFANITY_MODES)}, not {profanity[:40]!r}")
    options = RecognitionOptions(
        language=re.split(r"[-_]", language, maxsplit=1)[0].lower(),
        word_timestamps=True,  # Offset starts at the first word, and NBest's Confidence is the words' mean
        channel_mode=ChannelMode.MIX,  # the API is for mono audio; a stereo upload is one speaker stream
    )
    return ShortAudioRequest(options=options, result_format=result_format)


def transcript_of(job: Job) -> Transcript:
    if job.status is JobStatus.DONE and job.transcript is not None:
        return job.transcript
    raise failure_error(job)


def failure_error(job: Job) -> CallpipeError:
    """A failed job's error: an audio problem found while decoding is a 400; anything else is
    :class:`JobFailed`, answered as ``RecognitionStatus: Error``."""
    message = job.error or "recognition failed"
    error_class = AUDIO_ERRORS.get(job.error_code or "")
    return error_class(message) if error_class is not None else JobFailed(message)


# --- results ----------------------------------------------------------------------------------


def recognition_document(transcript: Transcript, result_format: ResultFormat) -> dict[str, Any]:
    """The ``simple`` or ``detailed`` result; no speech gives its ``RecognitionStatus`` alone."""
    spoken = [s for s in transcript.segments if s.text.strip()]
    if not spoken:
        return _silence_document(transcript)
    display = " ".join(s.text.strip() for s in spoken)
    start, end = _speech_span(spoken)
    document: dict[str, Any] = {
        "RecognitionStatus": RecognitionStatus.SUCCESS.value,
        "DisplayText": display,
        "Offset": ticks(start),
        "Duration": ticks(end - start),
    }
    if result_format is ResultFormat.DETAILED:
        lexical = lexical_form(display)
        document["NBest"] = [{
            "Confidence": _confidence(spoken),
            "Lexical": lexical,
            "ITN": lexical,
            "MaskedITN": lexical,
            "Display": display,
        }]
    return document


def _silence_document(transcript: Transcript) -> dict[str, Any]:
    """``InitialSilenceTimeout`` when nothing was heard (the VAD kept no speech), ``NoMatch``
    when there was sound the model made no words of."""
    if transcript.segments:
        start = transcript.segments[0].start
        end = transcript.segments[-1].end
        return {"RecognitionStatus": RecognitionStatus.NO_MATCH.value, "Offset": ticks(start), "Duration": ticks(end - start)}
    return {
        "RecognitionStatus": RecognitionStatus.INITIAL_SILENCE_TIMEOUT.value,
        "Offset": 0,
        "Duration": ticks(transcript.duration),
    }


def failure_document() -> dict[str, Any]:
    """The body of a recognition that failed on our side: Azure's ``Error`` status."""
    return {"RecognitionStatus": RecognitionStatus.ERROR.value, "Offset": 0, "Duration": 0}


def _speech_span(segments: list[Segment]) -> tuple[float, float]:
    """From the first word's start to the last word's end (the segments' edges without words)."""
    words = [w for s in segments for w in s.words]
    if words:
        return min(w.start for w in words), max(w.end for w in words)
    return segments[0].start, max(s.end for s in segments)


def _confidence(segments: list[Segment]) -> float:
    values = [w.confidence for s in segments for w in s.words if w.confidence is not None]
    if not values:
        values = [s.confidence for s in segments if s.confidence is not None]
    return round(sum(values) / len(values), 4) if values else 0.0


def lexical_form(display: str) -> str:
    """Lower case without punctuation: Azure's ``Lexical``/``ITN`` forms of the display text."""
    return " ".join(token for token in (t.strip(PUNCTUATION).lower() for t in display.split()) if token)


def ticks(seconds: float) -> int:
    return max(0, round(seconds * TICKS_PER_SECOND))


# --- tokens -----------------------------------------------------------------------------------


def issue_token(secret: bytes, owner: str | None, now: float) -> str:
    """A JWT (HS256) for ``Authorization: Bearer``, valid for :data:`TOKEN_LIFETIME_SECONDS`."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iss": TOKEN_ISSUER, "sub": owner, "iat": int(now), "exp": int(now) + TOKEN_LIFETIME_SECONDS}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(_sign(secret, f"{header}.{payload}"))
    return f"{header}.{payload}.{signature}"


def token_owner(secret: bytes, token: str, now: float) -> str | None:
    """The owner a token of ours names; :class:`AuthenticationFailed` for a token that is not
    ours, was altered, or has expired."""
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthenticationFailed("the access token is not valid")
    header, payload, signature = parts
    try:
        valid = hmac.compare_digest(_unb64(signature), _sign(secret, f"{header}.{payload}"))
        claims = json.loads(_unb64(payload)) if valid else None
    except (binascii.Error, ValueError):
        valid, claims = False, None
    if not valid or not isinstance(claims, dict) or claims.get("iss") != TOKEN_ISSUER:
        raise AuthenticationFailed("the access token is not valid")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires <= now:
        raise AuthenticationFailed("the access token has expired; get a new one from /sts/v1.0/issueToken")
    owner = claims.get("sub")
    return owner if isinstance(owner, str) else None


def _sign(secret: bytes, message: str) -> bytes:
    return hmac.new(secret, message.encode("ascii"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- errors -----------------------------------------------------------------------------------


def missing_key() -> CallpipeError:
    """No key and no token: Azure's 403 ("A resource key or authorization token is missing")."""
    return PermissionDenied(MISSING_KEY_MESSAGE)


def invalid_key() -> CallpipeError:
    return AuthenticationFailed(INVALID_KEY_MESSAGE)


def error_status(error: CallpipeError) -> int:
    """Azure's status: audio it cannot use and a body of the wrong type are 400 ("invalid
    audio"); the rest keep ours (401, 403, 413, 429 with Retry-After, 504...)."""
    if isinstance(error, (AudioError, UnsupportedMediaType)) and not isinstance(error, AudioTooLong):
        return 400
    return error.status


def error_reply(error: CallpipeError) -> tuple[int, dict[str, Any]]:
    """``(status, body)``: the gateway's ``{"error": {"code": "<status>", "message"}}``, except a
    recognition that failed on our side, which Azure reports as HTTP 200 with
    ``RecognitionStatus: Error``."""
    if isinstance(error, JobFailed):
        return 200, failure_document()
    status = error_status(error)
    return status, {"error": {"code": str(status), "message": error.message}}
