"""Page sessions: a signed cookie that names a key, and the CSRF tokens of the page's forms.

When keys are configured, the upload and transcript pages ask for one once (a login form) and
remember it in a cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page sends it), ``Secure`` over HTTPS. The cookie holds the key's *name* and owner id, an expiry
and an HMAC, never the key; a key removed or changed in the config ends its sessions at once.
The signing secret is made when the app is built, so a restart logs everyone out: no secret to
store, rotate or leak. Each form also carries a token derived from the session (or, on the login
form, from a cookie of its own), checked on every post.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from ..access import KeyPolicy

SESSION_COOKIE = "callpipe_session"
LOGIN_COOKIE = "callpipe_login"
"""Holds the login form's CSRF token until the login (double submit: another site can post the
form but cannot read or send this cookie)."""
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600
LOGIN_FORM_SECONDS = 3600
SECRET_BYTES = 32
SESSION_SECRET = web.AppKey("page_session_secret", bytes)


@dataclass(frozen=True)
class Session:
    key_name: str
    owner: str
    cookie: str
    """The signed value itself: the CSRF token of this session's forms derives from it."""


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def issue(secret: bytes, policy: KeyPolicy, now: float | None = None) -> str:
    """A cookie value naming ``policy``'s key until ``SESSION_SECONDS`` from now."""
    expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
    name = base64.urlsafe_b64encode(policy.name.encode()).decode().rstrip("=")
    payload = f"{name}.{policy.owner}.{expires}"
    return f"{payload}.{_sign(secret, payload)}"


def read(secret: bytes, value: str | None, now: float | None = None) -> Session | None:
    """The session a cookie value stands for; None when missing, forged, malformed or expired."""
    if not value or value.count(".") != 3:
        return None
    payload, _, signature = value.rpartition(".")
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        return None
    name, owner, expires = payload.split(".")
    try:
        key_name = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        expired = int(expires) < (now if now is not None else time.time())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return None if expired else Session(key_name, owner, value)


def csrf_token(secret: bytes, bound_to: str) -> str:
    """The token forms carry, bound to the session cookie (or the login cookie)."""
    return _sign(secret, "csrf:" + bound_to)[:32]


def csrf_valid(secret: bytes, bound_to: str | None, presented: str | None) -> bool:
    if not bound_to or not presented:
        return False
    return hmac.compare_digest(csrf_token(secret, bound_to), presented)


def set_cookie(response: web.StreamResponse, name: str, value: str, max_age: int, secure: bool) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Strict", secure=secure)


def clear_cookie(response: web.StreamResponse, name: str, secure: bool) -> None:
    response.set_cookie(name, "", max_age=0, path="/", httponly=True, samesite="Strict", secure=secure)


def _sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


__all__ = [
    "CSRF_FIELD", "LOGIN_COOKIE", "SESSION_COOKIE", "SESSION_SECRET", "Session", "clear_cookie", "csrf_token",
    "csrf_valid", "issue", "new_secret", "read", "set_cookie",
]
