"""The one exception tree of callpipe-asr.

Library errors (PyAV, CTranslate2, sqlite3, aiohttp's multipart reader) are caught where they
happen and re-raised as one of these, so the web layer needs one mapping to a status and each
provider dialect renders the same error in its own native shape.

    CallpipeError                 500  (base; anything unexpected)
    ├── InvalidRequest            400  malformed fields, bad JSON, missing file
    │   └── RemoteRequestFailed   400  a client's URL failed: unreachable, HTTP error, too slow
    ├── AuthenticationFailed      401  missing or wrong API key
    ├── PermissionDenied          403
    │   └── RemoteAccessDenied    403  a URL the config does not let the server reach
    ├── NotFound                  404  unknown or expired job, unknown model in strict mode
    ├── PayloadTooLarge           413  upload bytes over the limit
    ├── UnsupportedMediaType      415  a request body of the wrong content type
    ├── AudioError                400  (base for audio problems)
    │   ├── EmptyAudio            400  zero bytes, or a container with no samples
    │   ├── CorruptAudio          400  truncated or undecodable stream
    │   ├── UnsupportedAudio      415  bytes that are not a known audio format
    │   ├── TooManyChannels       400
    │   └── AudioTooLong          413  duration over the limit
    ├── QueueFull                 429  (Retry-After)
    ├── JobFailed                 422  the job ended failed; carries the reason
    ├── WaitTimeout               504  a synchronous wait ran out; the job goes on
    ├── NotReady                  503  model or store not ready yet
    └── EngineError               500  the engine raised
"""

from __future__ import annotations


class CallpipeError(Exception):
    """Base of every error callpipe-asr reports to a client."""

    status: int = 500
    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(CallpipeError):
    status = 400
    code = "invalid_request"


class AuthenticationFailed(CallpipeError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(CallpipeError):
    status = 403
    code = "permission_denied"


class RemoteAccessDenied(PermissionDenied):
    """A URL a client named (remote audio, a callback) that the config does not let the server
    reach: the feature is off, the host is not allowed, or it resolves to a private address."""

    code = "remote_access_denied"


class RemoteRequestFailed(InvalidRequest):
    """A URL a client named could not be used: unreachable, an HTTP error status, too many
    redirects, too slow. Apart from :class:`InvalidRequest` so a dialect can name it in its own
    words (Deepgram's ``REMOTE_CONTENT_ERROR``)."""

    code = "remote_request_failed"


class NotFound(CallpipeError):
    status = 404
    code = "not_found"


class PayloadTooLarge(CallpipeError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(CallpipeError):
    status = 415
    code = "unsupported_media_type"


class AudioError(CallpipeError):
    status = 400
    code = "invalid_audio"


class EmptyAudio(AudioError):
    code = "empty_audio"


class CorruptAudio(AudioError):
    code = "corrupt_audio"


class UnsupportedAudio(AudioError):
    status = 415
    code = "unsupported_audio"


class TooManyChannels(AudioError):
    code = "too_many_channels"


class AudioTooLong(AudioError):
    status = 413
    code = "audio_too_long"


class QueueFull(CallpipeError):
    status = 429
    code = "queue_full"
    retryable = True

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class JobFailed(CallpipeError):
    status = 422
    code = "job_failed"


class WaitTimeout(CallpipeError):
    status = 504
    code = "timeout"
    retryable = True


class NotReady(CallpipeError):
    status = 503
    code = "not_ready"
    retryable = True


class EngineError(CallpipeError):
    status = 500
    code = "engine_error"
