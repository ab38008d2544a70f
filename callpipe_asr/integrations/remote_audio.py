"""Audio a client names by URL: Deepgram ``{"url"}``, AssemblyAI ``audio_url``, Google ``uri``.

Off unless ``providers.allow_remote_audio``. Every hop (the URL and each redirect target) passes
the guard of :mod:`.outbound`; the whole fetch, redirects and body included, is bounded by
``providers.remote_timeout_seconds`` and its size by ``providers.remote_max_bytes``, counted
while the body streams in (a missing or lying Content-Length changes nothing).

Dialects call :func:`check_remote_url` while parsing a request (a bad URL is the client's 4xx at
once) and :func:`fetch_remote_audio` to get the bytes.
"""

from __future__ import annotations

import logging

import aiohttp
from yarl import URL

from ..errors import PayloadTooLarge, RemoteAccessDenied, RemoteRequestFailed
from ..settings import ProviderSettings
from .outbound import PinnedResolver, bounded, check_outbound_url, guarded_session, pin_checked

log = logging.getLogger(__name__)

WHAT = "the audio URL"
READ_CHUNK_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def check_remote_url(url: str, settings: ProviderSettings) -> str:
    """The URL, normalized, if remote audio is on and the URL is http(s) to an allowed host.

    The synchronous part of the checks (no DNS): :class:`InvalidRequest` for a bad URL or scheme
    (``gs://`` included), :class:`RemoteAccessDenied` when the config does not allow it. Its
    addresses are checked when it is fetched.
    """
    parsed = check_outbound_url(url, settings, WHAT)
    if not settings.allow_remote_audio:
        raise RemoteAccessDenied(
            "this server does not fetch audio from URLs (providers.allow_remote_audio is off); "
            "send the audio in the request"
        )
    return str(parsed)


async def fetch_remote_audio(url: str, settings: ProviderSettings) -> bytes:
    """The bytes at ``url``, following up to ``remote_max_redirects`` redirects.

    Raises :class:`InvalidRequest`/:class:`RemoteAccessDenied` as :func:`check_remote_url` does
    (and for any hop), :class:`RemoteAccessDenied` for a host resolving to a forbidden address,
    :class:`PayloadTooLarge` over ``remote_max_bytes``, and :class:`RemoteRequestFailed` for an
    HTTP error status, too many redirects, an unreachable host or a fetch over the time limit.
    """
    first = URL(check_remote_url(url, settings))
    assert first.raw_host is not None
    audio = await bounded(_follow(first, settings), settings.remote_timeout_seconds, first.raw_host)
    log.info("fetched %d bytes of remote audio from %s", len(audio), first.raw_host)
    return audio


async def _follow(url: URL, settings: ProviderSettings) -> bytes:
    """Request ``url`` and each redirect target in turn, each checked and pinned before it is
    contacted; aiohttp's own redirect handling would contact targets unchecked."""
    resolver = PinnedResolver()
    async with guarded_session(resolver, settings.remote_timeout_seconds) as session:
        for _hop in range(settings.remote_max_redirects + 1):
            await pin_checked(url, settings, resolver)
            async with session.get(url, allow_redirects=False) as response:
                target = _redirect_target(response)
                if target is None:
                    _raise_for_status(response)
                    return await _read_limited(response, settings.remote_max_bytes)
            url = URL(check_remote_url(str(target), settings))
    raise RemoteRequestFailed(f"{WHAT} redirected more than {settings.remote_max_redirects} times")


def _redirect_target(response: aiohttp.ClientResponse) -> URL | None:
    """Where a redirect points (relative locations resolved), or None for any other answer."""
    location = response.headers.get("Location")
    if response.status not in REDIRECT_STATUSES or not location:
        return None
    try:
        return response.url.join(URL(location))
    except ValueError as exc:
        raise RemoteRequestFailed(f"{WHAT} redirected to an invalid location") from exc


def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if not 200 <= response.status < 300:
        raise RemoteRequestFailed(
            f"{WHAT} answered HTTP {response.status} {response.reason or ''}".rstrip()
            + f" (host '{response.url.raw_host}')"
        )


async def _read_limited(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, refused with :class:`PayloadTooLarge` as soon as it is known to exceed
    ``max_bytes``: by its Content-Length before reading, or by the bytes received (after
    decompression) otherwise."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"the remote audio is {declared} bytes; the limit is {max_bytes} bytes")
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        if len(body) + len(chunk) > max_bytes:
            raise PayloadTooLarge(f"the remote audio is more than {max_bytes} bytes, the limit")
        body += chunk
    return bytes(body)
