"""The one exception tree of callpipe-asr.

Library errors (PyAV, CTranslate2, sqlite3, aiohttp's multipart reader) are caught where they
happen and re-raised as one of these, so the web layer needs one mapping to a status and each
provider dialect renders the same error in its own native shape.

    CallpipeError                 500  (base; anything unexpected)
    ├── InvalidRequest            400  malformed fields, bad JSON, missing file
    │   ├── RemoteRequestFailed   400  a client's URL failed: unreachable, HTTP error, too slow
    │   ├── UnsupportedLanguage   400  no configured model speaks the language asked for
    │   ├── UnsupportedTask       400  translation asked of English-only models
    │   ├── ModelNotInstalled     400  the model asked for is configured but its files are missing
    │   └── BodyReadTimeout       408  the client sent its request body too slowly
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
    │   ├── TooManyUploads        429  server.max_concurrent_uploads bodies already arriving
    │   ├── RateLimited           429  a key's requests per minute, or a client's wrong keys
    │   └── TooManyJobs           429  a key's jobs queued or running at once
    ├── JobFailed                 422  the job ended failed; carries the reason
    ├── WaitTimeout               504  a synchronous wait ran out; the job goes on
    ├── NotReady                  503  model or store not ready yet
    │   ├── StorageFull           503  the data directory's disk is (nearly) full
    │   ├── StoreBusy             503  the job database stayed locked by another process (Retry-After)
    │   ├── StoreUnavailable      503  the job database cannot be reached: PostgreSQL down or
    │   │                              restarting past the retries, no pooled connection (Retry-After)
    │   └── ShuttingDown          503  the server is stopping (SIGTERM): no new work
    └── EngineError               500  the engine raised
"""

from __future__ import annotations


class CallpipeError(Exception):
    """Base of every error callpipe-asr reports to a client."""

    status: int = 500
    code: str = "internal_error"
    retryable: bool = False
    retry_after_seconds: int | None = None
    """Seconds a client should wait before trying again, sent as ``Retry-After`` in every
    dialect; None: no such advice."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(CallpipeError):
    status = 400
    code = "invalid_request"


class BodyReadTimeout(InvalidRequest):
    """The request body did not arrive within ``server.body_read_timeout_seconds``: a stalled or
    trickling client must not hold an upload slot and its buffered bytes forever. Under
    :class:`InvalidRequest` so dialects without a 408 of their own answer it as a bad request."""

    status = 408
    code = "request_timeout"


class UnsupportedLanguage(InvalidRequest):
    """No installed model speaks the language a request named (or the model it named does not).
    The message names the language, so each dialect's native 400 says what was wrong."""

    code = "unsupported_language"

    def __init__(self, message: str, language: str) -> None:
        super().__init__(message)
        self.language = language


class UnsupportedTask(InvalidRequest):
    """Translation asked of a model (or a configuration) that only speaks English: Whisper's
    English-only models cannot translate."""

    code = "translation_unavailable"


class ModelNotInstalled(InvalidRequest):
    """A request named a configured model whose files are not installed (its extra is missing)."""

    code = "model_not_installed"


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
        self.retry_after_seconds: int = retry_after_seconds


class RateLimited(QueueFull):
    """A key made more requests per minute than it may, or a client presented too many wrong
    keys. A :class:`QueueFull` so every dialect answers it as its own 429 with ``Retry-After``."""

    code = "rate_limited"


class TooManyJobs(QueueFull):
    """A key already has as many jobs queued or running as it may (``max_concurrent_jobs``)."""

    code = "too_many_jobs"


class TooManyUploads(QueueFull):
    """``server.max_concurrent_uploads`` request bodies are already being received (each may
    hold up to ``server.max_upload_bytes`` in memory). A :class:`QueueFull` so every dialect
    answers it as its own 429 with ``Retry-After``, which clients already retry."""

    code = "too_many_uploads"


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


class StorageFull(NotReady):
    """The data directory's file system is full, or too full to accept more work and still
    finish the jobs already accepted (``jobs.min_free_disk_bytes``). Nothing was stored."""

    code = "storage_full"


STORE_RETRY_AFTER_SECONDS = 5
"""``Retry-After`` of a job store that cannot answer for now: the request already waited (SQLite's
busy timeout, PostgreSQL's ``jobs.lease_seconds`` of retries), so a few seconds more, not a minute."""


class StoreBusy(NotReady):
    """The job database stayed locked by another process past SQLite's busy timeout (a backup
    tool or a manual ``sqlite3`` session holding a write transaction). Nothing was changed."""

    code = "store_busy"
    retry_after_seconds = STORE_RETRY_AFTER_SECONDS


class StoreUnavailable(NotReady):
    """The job database cannot be reached (PostgreSQL stopped, restarting or failing over for
    longer than the store retries, ``jobs.lease_seconds``; every pooled connection lost). The
    transaction rolled back; if only its acknowledgement was lost, the same request sent again
    attaches to the job it made (duplicates)."""

    code = "store_unavailable"
    retry_after_seconds = STORE_RETRY_AFTER_SECONDS


class ShuttingDown(NotReady):
    """The server is stopping: it finishes the work it has and takes no more. Retrying (after
    the restart, or at another instance) is right."""

    code = "shutting_down"


class EngineError(CallpipeError):
    status = 500
    code = "engine_error"
