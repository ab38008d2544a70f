"""Remote audio: a real aiohttp server on 127.0.0.1 serves a real Asterisk prompt, and the fetcher
either brings it back or refuses for the right reason.

The test server is on loopback, so every test that must actually reach it turns
``allow_private_addresses`` on; with it off (the default) the same server must be unreachable,
refused after DNS resolution. Pure tables cover the host patterns and the address rules.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import time
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from callpipe_asr.errors import InvalidRequest, PayloadTooLarge, PermissionDenied, RemoteAccessDenied, RemoteRequestFailed
from callpipe_asr.integrations.outbound import PinnedResolver, address_refusal, guarded_session, host_allowed, resolve_checked
from callpipe_asr.integrations.remote_audio import check_remote_url, fetch_remote_audio
from callpipe_asr.settings import ProviderSettings

STREAM_PIECE_BYTES = 8 * 1024
SLOW_TIMEOUT_SECONDS = 1.0


def remote_settings(**changes: Any) -> ProviderSettings:
    """Remote audio on, the loopback test server allowed by name and address, private addresses
    allowed (the server is on 127.0.0.1), a short time limit; ``changes`` override any of it."""
    values: dict[str, Any] = {
        "allow_remote_audio": True,
        "allowed_hosts": ("127.0.0.1", "localhost"),
        "allow_private_addresses": True,
        "remote_timeout_seconds": 2.0,
        "remote_max_redirects": 2,
    }
    values.update(changes)
    return ProviderSettings(**values)


class AudioServer:
    """The remote end: serves ``audio`` in several ways and counts requests per path."""

    def __init__(self, audio: bytes) -> None:
        self.audio = audio
        self.hits: collections.Counter[str] = collections.Counter()
        self.release = asyncio.Event()
        """Set at teardown so a stalled response ends and the server can stop."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        app.router.add_get("/audio.wav", self.whole)
        app.router.add_get("/chunked.wav", self.chunked)
        app.router.add_get("/redirect/{left}", self.redirect_chain)
        app.router.add_get("/redirect-to", self.redirect_to)
        app.router.add_get("/stall.wav", self.stall)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        self.hits[request.path] += 1
        response: web.StreamResponse = await handler(request)
        return response

    async def whole(self, request: web.Request) -> web.Response:
        return web.Response(body=self.audio, content_type="audio/wav")

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        """No Content-Length: only counting the bytes can enforce a limit."""
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(self.audio), STREAM_PIECE_BYTES):
            await response.write(self.audio[start : start + STREAM_PIECE_BYTES])
        await response.write_eof()
        return response

    async def redirect_chain(self, request: web.Request) -> web.StreamResponse:
        left = int(request.match_info["left"])
        if left == 0:
            return await self.whole(request)
        raise web.HTTPFound(f"/redirect/{left - 1}")  # relative, as many servers send them

    async def redirect_to(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query["target"])

    async def stall(self, request: web.Request) -> web.StreamResponse:
        """Headers and a first piece at once, then nothing until the test ends."""
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(self.audio[:STREAM_PIECE_BYTES])
        await self.release.wait()
        return response


@pytest.fixture
async def audio_server(prompt: Any, aiohttp_server: Callable[..., Any]) -> AsyncIterator[tuple[AudioServer, TestServer]]:
    remote = AudioServer(prompt.audio)
    server: TestServer = await aiohttp_server(remote.app())
    yield remote, server
    remote.release.set()


def url_of(server: TestServer, path: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{server.port}{path}"


# -- it works ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_fetches_the_real_prompt_when_private_addresses_are_allowed(audio_server: Any, host: str) -> None:
    remote, server = audio_server
    audio = await fetch_remote_audio(url_of(server, "/audio.wav", host), remote_settings())
    assert audio == remote.audio
    assert audio[:4] == b"RIFF" and len(audio) > 40_000


async def test_fetches_a_chunked_body_within_the_limit(audio_server: Any) -> None:
    remote, server = audio_server
    settings = remote_settings(remote_max_bytes=len(remote.audio))
    assert await fetch_remote_audio(url_of(server, "/chunked.wav"), settings) == remote.audio


async def test_follows_redirects_up_to_the_limit(audio_server: Any) -> None:
    remote, server = audio_server
    audio = await fetch_remote_audio(url_of(server, "/redirect/2"), remote_settings(remote_max_redirects=2))
    assert audio == remote.audio
    assert remote.hits["/redirect/0"] == 1


# -- refused by the config, before any connection ----------------------------------------------


async def test_remote_audio_is_off_by_default(audio_server: Any) -> None:
    remote, server = audio_server
    with pytest.raises(RemoteAccessDenied, match="allow_remote_audio") as refused:
        await fetch_remote_audio(url_of(server, "/audio.wav"), remote_settings(allow_remote_audio=False))
    assert isinstance(refused.value, PermissionDenied) and refused.value.status == 403
    assert not remote.hits


async def test_a_host_not_allowed_is_refused_without_a_connection(audio_server: Any) -> None:
    remote, server = audio_server
    settings = remote_settings(allowed_hosts=("audio.example.com",))
    with pytest.raises(RemoteAccessDenied, match="'127.0.0.1'.*allowed_hosts"):
        await fetch_remote_audio(url_of(server, "/audio.wav"), settings)
    with pytest.raises(RemoteAccessDenied):
        await fetch_remote_audio(url_of(server, "/audio.wav"), remote_settings(allowed_hosts=()))
    assert not remote.hits


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("gs://bucket/call.wav", "gs://"),
        ("ftp://127.0.0.1/call.wav", "'ftp://'"),
        ("file:///etc/passwd", "'file://'"),
        ("127.0.0.1/call.wav", "without a scheme"),
        ("http:///call.wav", "no host"),
    ],
)
def test_bad_schemes_and_urls_are_invalid_requests(url: str, named: str) -> None:
    with pytest.raises(InvalidRequest, match=named) as refused:
        check_remote_url(url, remote_settings())
    assert refused.value.status == 400
    assert not isinstance(refused.value, RemoteRequestFailed)


def test_gs_uri_is_a_400_even_with_remote_audio_off() -> None:
    with pytest.raises(InvalidRequest, match="Google Cloud Storage"):
        check_remote_url("gs://bucket/call.flac", ProviderSettings())


# -- refused after DNS resolution -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_refused_after_resolution_when_private_addresses_are_off(audio_server: Any, host: str) -> None:
    remote, server = audio_server
    settings = remote_settings(allow_private_addresses=False)
    url = url_of(server, "/audio.wav", host)
    assert check_remote_url(url, settings)  # the name itself passes; only its addresses fail
    with pytest.raises(RemoteAccessDenied, match=rf"'{host}' resolves to .*loopback.*allow_private_addresses"):
        await fetch_remote_audio(url, settings)
    assert not remote.hits


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("http://0.0.0.0:{port}/audio.wav", RemoteAccessDenied, "0.0.0.0, the unspecified address, which this server never"),
        ("http://localhost:{port}/audio.wav", RemoteAccessDenied, "'localhost'.*allowed_hosts"),
        ("file:///etc/passwd", InvalidRequest, "'file://'"),
    ],
)
async def test_each_redirect_target_is_checked_again(
    audio_server: Any, target: str, error: type[Exception], message: str
) -> None:
    remote, server = audio_server
    # 0.0.0.0 is an allowed *name* here; its address is what gets it refused.
    settings = remote_settings(allowed_hosts=("127.0.0.1", "0.0.0.0"))
    url = str(URL(url_of(server, "/redirect-to")).with_query(target=target.format(port=server.port)))
    with pytest.raises(error, match=message):
        await fetch_remote_audio(url, settings)
    assert remote.hits == {"/redirect-to": 1}


async def test_connections_go_to_the_checked_address_not_a_new_lookup(audio_server: Any) -> None:
    """The pinned resolver is the only source of addresses: a name no DNS knows reaches the
    server through the address pinned for it, and an unpinned name reaches nothing."""
    remote, server = audio_server
    resolver = PinnedResolver()
    pinned = await resolve_checked(URL(url_of(server, "/")), remote_settings())
    resolver.pin("audio.pinned.test", [dict(r, hostname="audio.pinned.test") for r in pinned])  # type: ignore[misc]
    async with guarded_session(resolver, 2.0) as session:
        async with session.get(f"http://audio.pinned.test:{server.port}/audio.wav") as response:
            assert await response.read() == remote.audio
    with pytest.raises(OSError, match="no checked address"):
        await resolver.resolve("unpinned.test", server.port)


# -- limits and remote failures ---------------------------------------------------------------------


async def test_too_large_by_content_length_is_refused_before_reading(audio_server: Any) -> None:
    remote, server = audio_server
    with pytest.raises(PayloadTooLarge, match=rf"is {len(remote.audio)} bytes; the limit is 1000") as refused:
        await fetch_remote_audio(url_of(server, "/audio.wav"), remote_settings(remote_max_bytes=1000))
    assert refused.value.status == 413


async def test_too_large_by_streamed_bytes_is_refused(audio_server: Any) -> None:
    remote, server = audio_server
    settings = remote_settings(remote_max_bytes=len(remote.audio) - 1)
    with pytest.raises(PayloadTooLarge, match="more than"):
        await fetch_remote_audio(url_of(server, "/chunked.wav"), settings)


async def test_too_many_redirects_fail(audio_server: Any) -> None:
    remote, server = audio_server
    with pytest.raises(RemoteRequestFailed, match="redirected more than 2 times") as failed:
        await fetch_remote_audio(url_of(server, "/redirect/3"), remote_settings(remote_max_redirects=2))
    assert failed.value.status == 400
    assert remote.hits["/redirect/0"] == 0


async def test_a_stalled_server_runs_into_the_time_limit(audio_server: Any) -> None:
    remote, server = audio_server
    started = time.monotonic()
    with pytest.raises(RemoteRequestFailed, match="did not answer within 1 s"):
        await fetch_remote_audio(url_of(server, "/stall.wav"), remote_settings(remote_timeout_seconds=SLOW_TIMEOUT_SECONDS))
    assert SLOW_TIMEOUT_SECONDS <= time.monotonic() - started < SLOW_TIMEOUT_SECONDS + 1.0


async def test_a_remote_404_names_the_status(audio_server: Any) -> None:
    remote, server = audio_server
    with pytest.raises(RemoteRequestFailed, match="HTTP 404 Not Found") as failed:
        await fetch_remote_audio(url_of(server, "/missing.wav"), remote_settings())
    assert failed.value.status == 400 and failed.value.code == "remote_request_failed"


async def test_a_closed_port_is_a_remote_failure(audio_server: Any) -> None:
    remote, server = audio_server
    port = server.port
    await server.close()
    with pytest.raises(RemoteRequestFailed, match="could not talk to host '127.0.0.1'"):
        await fetch_remote_audio(f"http://127.0.0.1:{port}/audio.wav", remote_settings())


# -- the rules as tables --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        ("audio.example.com", ("audio.example.com",), True),
        ("AUDIO.Example.com.", ("audio.example.com",), True),
        ("a.b.example.com", ("*.example.com",), True),
        ("example.com", ("*.example.com",), False),
        ("evilexample.com", ("*.example.com",), False),
        ("example.com.evil.net", ("*.example.com", "example.com"), False),
        ("xn--bcher-kva.de", ("bücher.de",), True),
        ("::1", ("[::1]",), True),
        ("10.0.0.1", (), False),
    ],
)
def test_host_patterns(host: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


@pytest.mark.parametrize(
    ("address", "private_off", "private_on"),
    [
        ("93.184.216.34", None, None),
        ("2606:4700:4700::1111", None, None),
        ("127.0.0.1", "a loopback address", None),
        ("::1", "a loopback address", None),
        ("10.1.2.3", "a private address", None),
        ("172.16.5.4", "a private address", None),
        ("192.168.1.10", "a private address", None),
        ("fd00::1", "a private address", None),
        ("169.254.169.254", "a link-local address", None),
        ("fe80::1", "a link-local address", None),
        ("100.64.0.1", "a non-public address", None),
        ("::ffff:127.0.0.1", "a loopback address", None),
        ("::ffff:93.184.216.34", None, None),
        ("2002:a00:1::", "a private address", None),
        ("64:ff9b::a9fe:a9fe", "a link-local address", None),
        ("0.0.0.0", "the unspecified address", "the unspecified address"),
        ("0.1.2.3", "the unspecified address", "the unspecified address"),
        ("::", "the unspecified address", "the unspecified address"),
        ("224.0.0.1", "a multicast address", "a multicast address"),
        ("ff02::1", "a multicast address", "a multicast address"),
        ("240.0.0.1", "a reserved address", "a reserved address"),
        ("255.255.255.255", "a reserved address", "a reserved address"),
    ],
)
def test_address_rules(address: str, private_off: str | None, private_on: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert address_refusal(ip, allow_private=False) == private_off
    assert address_refusal(ip, allow_private=True) == private_on
