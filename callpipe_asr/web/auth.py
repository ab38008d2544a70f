"""API keys. Each dialect finds the key in its own credential style; this module only decides.

Keys are compared in constant time and never stored: a job's owner is a short hash of its key,
so listing endpoints show each key its own jobs. Within a request (see :mod:`.scope`) the same
call also enforces the key's allowed dialects and rate limit, and a client's limit on wrong
keys, raising errors every dialect already renders natively (403, 429 with ``Retry-After``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from typing import Callable

from aiohttp import web

from .. import logs
from ..access import KeyPolicy, TokenBuckets, configured_keys, owner_id, retry_after_seconds
from ..errors import AuthenticationFailed, PermissionDenied, RateLimited
from ..settings import AuthSettings
from . import scope as request_scope

log = logging.getLogger(__name__)


class KeyRing:
    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = tuple((hashlib.sha256(key.encode()).digest(), policy) for key, policy in configured_keys(settings))
        self._failures_per_minute = settings.max_failed_attempts_per_minute
        self._requests = TokenBuckets(clock)
        self._failures = TokenBuckets(clock)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @property
    def policies(self) -> tuple[KeyPolicy, ...]:
        return tuple(policy for _, policy in self._keys)

    def owner(self, presented: str | None) -> str | None:
        """The owner id for a presented key; None when no keys are configured.

        Raises :class:`AuthenticationFailed` for a missing key and its subclass :class:`InvalidKey`
        for a wrong one; within a request also :class:`PermissionDenied` for a dialect the key may
        not use and :class:`RateLimited` past its rate or the client's wrong-key limit. Each
        dialect renders them with its own status and shape.
        """
        policy = self.identify(presented)
        return policy.owner if policy else None

    def identify(self, presented: str | None) -> KeyPolicy | None:
        """The policy of a presented key (see :meth:`owner`). A request that asks several times
        counts once against its key's rate."""
        if not self._keys:
            return None
        scope = request_scope.current()
        if scope is not None:
            self._refuse_guessing_client(scope)
        if not presented:
            _deny(scope, "missing_key")
            raise AuthenticationFailed("an API key is required")
        policy = self.match(presented)
        if policy is None:
            if scope is not None:
                self._failures.take(scope.client, self._failures_per_minute)
            _deny(scope, "invalid_key")
            raise InvalidKey("the API key is not valid")
        if scope is not None and scope.key is not policy:
            self._admit(scope, policy)
        return policy

    def match(self, presented: str) -> KeyPolicy | None:
        """The policy of ``presented``, comparing it with every key (all of them, whatever
        matches, and as fixed-length digests: neither timing nor length tells anything)."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: KeyPolicy | None = None
        for key_digest, policy in self._keys:
            if hmac.compare_digest(key_digest, digest):
                found = policy
        return found

    def by_name(self, name: str, owner: str) -> KeyPolicy | None:
        """The configured key called ``name`` that still stands for ``owner`` (a page session
        names both: a renamed, changed or removed key ends its sessions)."""
        for _, policy in self._keys:
            if policy.name == name and hmac.compare_digest(policy.owner, owner):
                return policy
        return None

    def admit(self, policy: KeyPolicy) -> None:
        """Apply ``policy``'s dialect and rate checks to the current request, for callers that
        identified the key another way (a page session, a token issued for the key)."""
        scope = request_scope.current()
        if scope is not None and scope.key is not policy:
            self._admit(scope, policy)

    def admit_owner(self, owner: str | None) -> None:
        """:meth:`admit` for a caller known by its owner id (a token issued for a key); a key
        removed since the token was issued is refused."""
        if not self._keys:
            return
        policy = next((p for _, p in self._keys if owner is not None and hmac.compare_digest(p.owner, owner)), None)
        if policy is None:
            _deny(request_scope.current(), "invalid_key")
            raise InvalidKey("the key this token was issued for is no longer valid")
        self.admit(policy)

    def _admit(self, scope: request_scope.RequestScope, policy: KeyPolicy) -> None:
        scope.key_name = policy.name
        logs.bind(key=policy.name)
        if not policy.allows(scope.dialect):
            _deny(scope, "dialect_not_allowed")
            raise PermissionDenied(f"this API key may not use the {scope.dialect} API")
        wait = self._requests.take(policy.name, policy.rate_limit_per_minute)
        if wait > 0:
            _deny(scope, "rate_limited")
            raise RateLimited(
                f"this API key may make {policy.rate_limit_per_minute} requests per minute", retry_after_seconds(wait)
            )
        scope.key = policy

    def _refuse_guessing_client(self, scope: request_scope.RequestScope) -> None:
        wait = self._failures.wait(scope.client, self._failures_per_minute)
        if wait > 0:
            _deny(scope, "too_many_failures")
            raise RateLimited("too many wrong API keys from this address", retry_after_seconds(wait))


def _deny(scope: request_scope.RequestScope | None, reason: str) -> None:
    if scope is not None:
        scope.denial = reason


class InvalidKey(AuthenticationFailed):
    """A key was presented but is not one of ours."""

    code = "invalid_api_key"


def bearer_token(request: web.Request) -> str | None:
    """``Authorization: Bearer KEY`` (an empty ``Bearer`` gives None)."""
    return _scheme_value(request, "bearer")


def token_scheme(request: web.Request, scheme: str) -> str | None:
    """``Authorization: <scheme> KEY``, e.g. Deepgram's ``Token``."""
    return _scheme_value(request, scheme.lower())


def basic_password(request: web.Request, user: str | None = None) -> str | None:
    """The password of ``Authorization: Basic`` (Watson: user ``apikey``)."""
    value = _scheme_value(request, "basic")
    if not value:
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    if not sep or (user is not None and name != user):
        return None
    return password


def bare_authorization(request: web.Request) -> str | None:
    """``Authorization: KEY`` with no scheme (AssemblyAI)."""
    value = request.headers.get("Authorization", "").strip()
    return value or None


def _scheme_value(request: web.Request, scheme: str) -> str | None:
    value = request.headers.get("Authorization", "")
    name, _, rest = value.strip().partition(" ")
    if name.lower() != scheme:
        return None
    return rest.strip() or None


__all__ = [
    "KeyRing", "InvalidKey", "owner_id", "bearer_token", "token_scheme", "basic_password",
    "bare_authorization",
]
