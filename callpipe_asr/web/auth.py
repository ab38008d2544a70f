"""API keys. Each dialect finds the key in its own credential style; this module only decides.

Keys are compared in constant time and never stored: a job's owner is a short hash of its key,
so listing endpoints show each key its own jobs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from aiohttp import web

from ..errors import AuthenticationFailed
from ..settings import AuthSettings


class KeyRing:
    def __init__(self, settings: AuthSettings) -> None:
        self._keys = tuple(settings.api_keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def owner(self, presented: str | None) -> str | None:
        """The owner id for a presented key; None when no keys are configured.

        Raises :class:`AuthenticationFailed` for a missing key and its subclass :class:`InvalidKey`
        for a wrong one; each dialect renders them with its own status and shape.
        """
        if not self._keys:
            return None
        if not presented:
            raise AuthenticationFailed("an API key is required")
        for key in self._keys:
            if hmac.compare_digest(key.encode(), presented.encode()):
                return owner_id(key)
        raise InvalidKey("the API key is not valid")


class InvalidKey(AuthenticationFailed):
    """A key was presented but is not one of ours."""

    code = "invalid_api_key"


def owner_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


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
