"""Who may ask for work, and how much: named API keys, their limits and their defaults.

The web layer finds a key in each dialect's credential style and asks :class:`web.auth.KeyRing`;
the job service applies a key's defaults and its concurrent-job limit. Both read the same
:class:`KeyPolicy` objects, built once from the settings here, so neither needs the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable

from .settings import AuthSettings, KeySettings, Settings
from .transcript import RecognitionOptions

SECONDS_PER_MINUTE = 60.0
MAX_TRACKED_BUCKETS = 10_000
"""Buckets kept before full ones are forgotten: a flood of client addresses cannot grow memory."""


def owner_id(key: str) -> str:
    """The job owner a key stands for: a short hash, so the key itself is never stored. The same
    key gives the same owner whatever its name, so renaming a key keeps its jobs."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KeyPolicy:
    """One configured key, without its secret: what logs, metrics and limits need."""

    name: str
    owner: str
    rate_limit_per_minute: int = 0
    max_concurrent_jobs: int = 0
    allowed_dialects: frozenset[str] = frozenset()
    language: str | None = None
    model: str | None = None

    def allows(self, dialect: str) -> bool:
        return not self.allowed_dialects or dialect in self.allowed_dialects

    def with_defaults(self, options: RecognitionOptions, settings: Settings) -> RecognitionOptions:
        """``options`` with this key's language where the request named none, and its model
        where the request named no configured one (a provider name such as ``whisper-1`` would
        otherwise run on ``default_model``; in strict mode such a name still fails)."""
        language = options.language or self.language
        named_configured = options.model is not None and options.model in settings.models
        strict_refusal = options.model is not None and settings.providers.strict_model_names
        model = self.model if self.model and not named_configured and not strict_refusal else options.model
        if (language, model) == (options.language, options.model):
            return options
        return dataclasses.replace(options, language=language, model=model)


def _policy(name: str, key: KeySettings) -> KeyPolicy:
    return KeyPolicy(
        name=name,
        owner=owner_id(key.key),
        rate_limit_per_minute=key.rate_limit_per_minute,
        max_concurrent_jobs=key.max_concurrent_jobs,
        allowed_dialects=frozenset(key.allowed_dialects),
        language=key.language or None,
        model=key.model or None,
    )


def configured_keys(auth: AuthSettings) -> tuple[tuple[str, KeyPolicy], ...]:
    """Every key with its policy: the named ``keys``, then the older unnamed ``api_keys``
    (named ``api_keys[1]``... and without limits)."""
    named = [(key.key, _policy(name, key)) for name, key in auth.keys.items()]
    unnamed = [(key, _policy(f"api_keys[{i}]", KeySettings(key=key))) for i, key in enumerate(auth.api_keys, start=1)]
    return tuple(named + unnamed)


def policies_by_owner(auth: AuthSettings) -> dict[str, KeyPolicy]:
    return {policy.owner: policy for _, policy in configured_keys(auth)}


@dataclass
class _Bucket:
    tokens: float
    updated: float
    per_minute: int

    def refill(self, now: float) -> None:
        self.tokens = min(float(self.per_minute), self.tokens + (now - self.updated) * self.per_minute / SECONDS_PER_MINUTE)
        self.updated = now


class TokenBuckets:
    """Per-name token buckets: ``per_minute`` requests a minute, bursts up to the same number.

    A bucket refills continuously, so a client over its limit waits only as long as one request
    takes to come back (the ``Retry-After`` it is told), not until a window ends.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, name: str, per_minute: int) -> float:
        """Spend one request of ``name``: 0 when allowed, else the seconds until it would be
        (nothing is spent then)."""
        wait = self.wait(name, per_minute)
        if wait == 0 and per_minute > 0:
            self._buckets[name].tokens -= 1
        return wait

    def wait(self, name: str, per_minute: int) -> float:
        """Seconds until ``name`` may make a request; 0 now. Spends nothing."""
        if per_minute <= 0:
            return 0.0
        bucket = self._refilled(name, per_minute)
        if bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) * SECONDS_PER_MINUTE / per_minute

    def _refilled(self, name: str, per_minute: int) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[name] = _Bucket(float(per_minute), now, per_minute)
        bucket.per_minute = per_minute  # a reloaded limit applies at once
        bucket.refill(now)
        return bucket

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them loses nothing."""
        for name, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.per_minute:
                del self._buckets[name]


def retry_after_seconds(wait: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


__all__ = ["KeyPolicy", "TokenBuckets", "configured_keys", "owner_id", "policies_by_owner", "retry_after_seconds"]
