"""The job: one state machine for every dialect.

    queued ──claim──▶ running ──finish──▶ done
       ▲                 │ ╲──fail────▶ failed
       └──release / ─────┘
          recovery after a crash (until max_attempts, then failed)

Each provider maps these four states to its own words (FusionPBX's ``started``/``finished``,
AssemblyAI's ``processing``/``completed``...).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..transcript import AudioHints, RecognitionOptions, Transcript


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED)


@dataclass(frozen=True)
class JobRequest:
    """Work a client asked for, before the store accepts it."""

    audio: bytes
    options: RecognitionOptions
    hints: AudioHints | None = None
    filename: str | None = None
    content_type: str | None = None
    """MIME type of the audio as the probe found it (the page's player serves it back with it)."""
    owner: str | None = None
    """Identity of the API key that asked (never the key itself); None without keys."""
    dialect: str = "native"
    audio_duration: float | None = None
    """Seconds, from the probe."""
    may_exceed_queue: bool = False
    """Callers that cannot handle a refusal (FusionPBX) queue past ``max_queued`` up to the hard cap."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """What a dialect must remember to answer later in its own words (Watson's ``user_token``,
    AssemblyAI's request fields); JSON-serialisable."""
    callback_url: str | None = None
    """Where to post the result when the job ends (already checked against the allowed hosts)."""

    @property
    def dedupe_key(self) -> str:
        """Same audio, same options, same key: the same job."""
        digest = hashlib.sha256()
        digest.update(self.audio)
        digest.update(json.dumps(self.options.to_dict(), sort_keys=True).encode())
        digest.update(json.dumps(self.hints.to_dict() if self.hints else None, sort_keys=True).encode())
        digest.update((self.owner or "").encode())
        digest.update(self.dialect.encode())
        digest.update(json.dumps(self.metadata, sort_keys=True).encode())
        digest.update((self.callback_url or "").encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class Job:
    id: str
    status: JobStatus
    created_at: float
    """Unix time, seconds."""
    options: RecognitionOptions
    hints: AudioHints | None
    dialect: str
    attempts: int
    filename: str | None = None
    content_type: str | None = None
    owner: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    audio_duration: float | None = None
    """Seconds."""
    has_audio: bool = False
    error: str | None = None
    error_code: str | None = None
    transcript: Transcript | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    callback_status: str | None = None
    """``pending``, ``delivered`` or ``failed`` once the job has ended; None without a callback."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker holds; only a result written with ``token`` counts (exactly once)."""

    job: Job
    audio: bytes
    token: str


@dataclass(frozen=True)
class QueueStats:
    queued: int
    running: int
    average_processing_seconds: float | None
    """Mean wall time of recent finished jobs, for estimates; None before the first one."""

    @property
    def active(self) -> int:
        return self.queued + self.running
