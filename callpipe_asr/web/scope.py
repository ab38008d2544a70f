"""What the server knows about the request being handled: its id, dialect, client and key.

Every dialect authenticates with one call, ``request.app[KEYS].owner(key)``, made with the key
alone. Per-dialect permissions and per-client limits also need to know which API is asking and
from where; the middleware (:mod:`.observe`) puts that here, in a context variable that lives
exactly as long as the request's handling, so the dialects' calls stay as they are.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from dataclasses import dataclass
from typing import Iterator, Sequence

from aiohttp import web

from .. import logs
from ..access import KeyPolicy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class RequestScope:
    request_id: str
    dialect: str
    """The route module that answers (``openai`` for ``web/routes_openai.py``); ``none`` when
    no route matched."""
    client: str
    """The client's address: the peer, or what trusted proxies say in ``X-Forwarded-For``."""
    key: KeyPolicy | None = None
    """The key this request was admitted with (allowed dialect, within its rate)."""
    key_name: str | None = None
    """The name of the key presented, admitted or not: what logs and metrics say."""
    denial: str | None = None
    """Why access was refused (``invalid_key``, ``rate_limited``...), for the metrics."""


_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar("callpipe_asr_request_scope", default=None)


def current() -> RequestScope | None:
    """The request being handled in this context; None outside a request (tests, workers)."""
    return _SCOPE.get()


@contextlib.contextmanager
def entered(scope: RequestScope) -> Iterator[RequestScope]:
    """Make ``scope`` the current request's, with its id on every log line, until the block
    ends; what is bound to the logs meanwhile (the key's name) ends with it."""
    token = _SCOPE.set(scope)
    try:
        with logs.bound(request_id=scope.request_id):
            yield scope
    finally:
        _SCOPE.reset(token)


def trusted_networks(proxies: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def client_address(request: web.Request, trusted: Sequence[Network]) -> str:
    """The client's address. ``X-Forwarded-For`` is read only when the peer is a trusted proxy,
    from the right: each hop appends the address it saw, so the first address that is not a
    trusted proxy is the client (anything left of it may be forged by that client)."""
    peer = request.remote or "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _is_trusted(hop, trusted):
            return hop if _is_address(hop) else peer
    return peer


def forwarded_https(request: web.Request, trusted: Sequence[Network]) -> bool:
    """Whether the client reached us over HTTPS: directly, or per a trusted proxy's
    ``X-Forwarded-Proto`` (so page cookies get ``Secure`` behind a TLS proxy)."""
    if request.secure:
        return True
    peer = request.remote or ""
    return bool(trusted) and _is_trusted(peer, trusted) and request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


__all__ = ["RequestScope", "client_address", "current", "entered", "forwarded_https", "trusted_networks"]
