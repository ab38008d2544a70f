"""The guard every outbound request passes (remote audio, callbacks, callback challenges).

A client that names a URL makes this server open a connection for it: the classic server-side
request forgery (SSRF) set-up. So each request

1. must be ``http``/``https`` to a host ``providers.allowed_hosts`` permits (checked before any
   network work, so it can run while a request is being parsed);
2. is resolved here, and every address is checked: loopback, private, link-local and other
   non-public addresses are refused unless ``providers.allow_private_addresses``; unspecified,
   multicast and reserved addresses always are (no HTTP server lives there; ``0.0.0.0`` reaches
   the local host on Linux);
3. connects only to the addresses checked. aiohttp gets a resolver that answers from the checked
   set alone, so a DNS answer that changes between the check and the connection (DNS rebinding)
   cannot move it. The URL keeps the host name, so TLS still verifies the certificate for it.

aiohttp itself follows no redirects here: whoever follows one checks its target again. Sessions
are made per call with ``trust_env=False`` (an environment proxy would connect for us, around
the pinned addresses) and never stored globally.

Hand-written: aiohttp has no SSRF policy hook beyond its resolver, and the Python libraries that
add one (``advocate``) wrap ``requests``, not aiohttp.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Awaitable, Mapping, Sequence, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .. import __version__
from ..errors import InvalidRequest, RemoteAccessDenied, RemoteRequestFailed
from ..settings import ProviderSettings

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = f"callpipe-asr/{__version__}"
ALLOWED_SCHEMES = ("http", "https")
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052 well-known prefix: on a network with NAT64 it reaches the IPv4 address in its last
32 bits, so that embedded address is what must be checked."""
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
"""RFC 1122 "this network": like 0.0.0.0, Linux connects such addresses to the local host."""


# -- the URL, before any network work ----------------------------------------------------------


def check_outbound_url(url: str, settings: ProviderSettings, what: str) -> URL:
    """The parsed URL if it is http(s) to an allowed host; ``what`` names it in errors
    ("the audio URL"). Errors name the host, never the whole URL (signed URLs carry secrets)."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{what} is not a valid URL") from exc
    scheme = parsed.scheme.lower()
    if scheme == "gs":
        raise InvalidRequest(
            f"{what} is a gs:// URI (Google Cloud Storage), which this server cannot read; "
            "send the audio in the request instead"
        )
    if scheme not in ALLOWED_SCHEMES:
        named = f"'{scheme}://'" if scheme else "a URL without a scheme"
        raise InvalidRequest(f"{what} must be an http:// or https:// URL, not {named}")
    host = parsed.raw_host
    if not host:
        raise InvalidRequest(f"{what} has no host name")
    if not host_allowed(host, settings.allowed_hosts):
        raise RemoteAccessDenied(
            f"{what} names host '{host}', which this server may not reach (it is not in providers.allowed_hosts)"
        )
    return parsed


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` matches one of ``patterns``: an exact name or IP address, or
    ``*.example.com`` for every name below example.com (not example.com itself)."""
    name = _normalize_host(host)
    for pattern in patterns:
        wanted = _normalize_host(pattern)
        if wanted.startswith("*."):
            suffix = wanted[1:]
            if name.endswith(suffix) and len(name) > len(suffix):
                return True
        elif name == wanted:
            return True
    return False


def _normalize_host(host: str) -> str:
    """Lower case, no brackets or trailing dot, IDNA (punycode) labels, canonical IP text, so that
    the config and yarl's ``raw_host`` spell the same host the same way."""
    text = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return ".".join(label if label == "*" else label.encode("idna").decode("ascii") for label in text.split("."))
    except UnicodeError:
        return text


# -- addresses ---------------------------------------------------------------------------------


def address_refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why a connection to ``address`` is refused, or None when it is allowed.

    IPv6 forms that carry an IPv4 address (``::ffff:10.0.0.1``, 6to4, NAT64) are judged by that
    IPv4 address. Order matters: ``::1`` is also "reserved" and 240.0.0.0/4 also "private" to the
    ipaddress module, and the first name that fits is the one the operator should read.
    """
    address = _embedded_ipv4(address) or address
    if address.is_unspecified or address in THIS_NETWORK:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        kind = "a loopback address"
    elif address.is_link_local:
        kind = "a link-local address"
    elif address.is_reserved:
        return "a reserved address"
    elif address.is_private:
        kind = "a private address"
    elif not address.is_global:
        kind = "a non-public address"
    else:
        return None
    return None if allow_private else kind


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


async def resolve_checked(url: URL, settings: ProviderSettings) -> list[ResolveResult]:
    """Resolve the URL's host and return its addresses, all of them checked; refuse the host
    (:class:`RemoteAccessDenied`) if any address is forbidden, since a name that mixes public and
    private answers is a rebinding attempt or a misconfiguration, never something to half-use."""
    host = url.raw_host
    port = url.port
    assert host is not None and port is not None, "check_outbound_url ran first"
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        raise RemoteRequestFailed(f"cannot resolve host '{host}': {exc.strerror}") from exc
    results: list[ResolveResult] = []
    for family, _type, proto, _canonical, sockaddr in infos:
        text = str(sockaddr[0])
        _refuse_address(host, ipaddress.ip_address(text), settings.allow_private_addresses)
        result = ResolveResult(
            hostname=host, host=text, port=port, family=family, proto=proto,
            flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        )
        if result not in results:
            results.append(result)
    if not results:
        raise RemoteRequestFailed(f"host '{host}' has no address")
    return results


def _refuse_address(host: str, address: IPAddress, allow_private: bool) -> None:
    refusal = address_refusal(address, allow_private)
    if refusal is None:
        return
    if address_refusal(address, allow_private=True) is None:
        why = "which this server may not reach (providers.allow_private_addresses is off)"
    else:
        why = "which this server never connects to"
    raise RemoteAccessDenied(f"host '{host}' resolves to {address}, {refusal}, {why}")


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one guarded session: answers only with addresses already checked
    by :func:`resolve_checked` and pinned here, never with a fresh DNS answer."""

    def __init__(self) -> None:
        self._pinned: dict[str, list[ResolveResult]] = {}

    def pin(self, host: str, results: list[ResolveResult]) -> None:
        self._pinned[_pin_key(host)] = results

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        results = self._pinned.get(_pin_key(host))
        if not results:
            # Only reachable through a bug: every request pins its host first.
            raise OSError(f"no checked address for host '{host}'")
        if family in (socket.AF_INET, socket.AF_INET6):
            results = [r for r in results if r["family"] == family]
        return list(results)

    async def close(self) -> None:
        self._pinned.clear()


def _pin_key(host: str) -> str:
    return host.rstrip(".").lower()


async def pin_checked(url: URL, settings: ProviderSettings, resolver: PinnedResolver) -> None:
    """Resolve and check the URL's host, then let ``resolver`` hand out only those addresses."""
    assert url.raw_host is not None
    resolver.pin(url.raw_host, await resolve_checked(url, settings))


# -- sessions and requests ---------------------------------------------------------------------


def guarded_session(resolver: PinnedResolver, timeout_seconds: float) -> aiohttp.ClientSession:
    """A session whose connections go only to pinned addresses (see the module docstring)."""
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
    )


async def bounded(work: Awaitable[T], timeout_seconds: float, host: str) -> T:
    """Run ``work`` (one whole exchange, redirects and body included) within the time limit,
    turning network failures into :class:`RemoteRequestFailed` that name the host."""
    try:
        return await asyncio.wait_for(work, timeout_seconds)
    except asyncio.TimeoutError as exc:
        raise RemoteRequestFailed(f"host '{host}' did not answer within {timeout_seconds:g} s") from exc
    except aiohttp.ClientError as exc:
        raise RemoteRequestFailed(f"could not talk to host '{host}': {exc or type(exc).__name__}") from exc


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    reason: str
    body: bytes
    """At most the bytes the caller asked for; the rest is not read."""


async def send_guarded(
    method: str,
    url: URL,
    settings: ProviderSettings,
    *,
    headers: Mapping[str, str],
    body: bytes | None = None,
    timeout_seconds: float,
    max_response_bytes: int,
) -> OutboundResponse:
    """One guarded request without redirects (a callback or a challenge; the caller checked the
    URL with :func:`check_outbound_url`). The address is checked now, at send time, not when the
    URL was accepted: DNS may have changed since."""
    assert url.raw_host is not None

    async def exchange() -> OutboundResponse:
        resolver = PinnedResolver()
        await pin_checked(url, settings, resolver)
        async with guarded_session(resolver, timeout_seconds) as session:
            async with session.request(method, url, headers=headers, data=body, allow_redirects=False) as response:
                content = await read_up_to(response.content, max_response_bytes)
                return OutboundResponse(response.status, response.reason or "", content)

    return await bounded(exchange(), timeout_seconds, url.raw_host)


async def read_up_to(stream: aiohttp.StreamReader, max_bytes: int) -> bytes:
    """The first ``max_bytes`` of a body (or all of a shorter one), leaving the rest unread."""
    data = bytearray()
    while len(data) < max_bytes:
        chunk = await stream.read(max_bytes - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)
