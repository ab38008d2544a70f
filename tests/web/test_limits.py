"""Every documented limit (README, "Limits") answered with the status it promises, against the
real app on a real loopback socket: body size (413), audio duration (413, and while decoding),
channels (400), concurrent uploads (429 + Retry-After), slow clients (408)."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
import wave
from typing import Any, Awaitable, Callable

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from asr_testkit import Prompt
from callpipe_asr.audio import AudioLimits
from callpipe_asr.audio.decode import decode_audio
from callpipe_asr.errors import AudioTooLong
from callpipe_asr.settings import Settings
from callpipe_asr.web.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def limited_client(aiohttp_client: Callable[..., Awaitable[TestClient]], make_settings: Callable[..., Settings]) -> ClientFactory:
    """``await limited_client(server__max_upload_bytes=2048, ...)``: the whole app without
    workers (accepted jobs stay queued), its store open."""

    async def build(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_settings(**overrides), run_workers=False))

    return build


def multipart(file: bytes, filename: str = "call.wav") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode() + file + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def wav(channels: int, seconds: float, rate: int = 8000) -> bytes:
    """A WAV of quiet noise with ``channels`` channels."""
    samples = (np.random.default_rng(1).standard_normal((int(rate * seconds), channels)) * 300).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())
    return out.getvalue()


async def raw_request(client: TestClient, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection of our own that has sent ``head`` (request line and headers) and no body yet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


def upload_head(length: int, content_type: str) -> str:
    return (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )


async def status_of(reader: asyncio.StreamReader, timeout: float = 20.0) -> tuple[int, str]:
    """The status and the raw head plus body of the answer on a raw connection."""
    data = await asyncio.wait_for(reader.read(65536), timeout)
    return int(data.split(b" ", 2)[1]), data.decode(errors="replace")


async def test_a_body_over_max_upload_bytes_is_413_declared_or_streamed(limited_client: ClientFactory) -> None:
    client = await limited_client(server__max_upload_bytes=2048)
    body, content_type = multipart(b"\0" * 4096)
    declared = await client.post("/api/v1/jobs", data=body, headers={"Content-Type": content_type})
    assert declared.status == 413
    assert (await declared.json())["error"]["code"] == "payload_too_large"

    async def chunks() -> Any:  # no Content-Length: the limit holds while streaming
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    streamed = await client.post("/api/v1/jobs", data=chunks(), headers={"Content-Type": content_type})
    assert streamed.status == 413
    raw = await client.post("/v1/listen", data=b"\0" * 4096, headers={"Content-Type": "audio/wav"})
    assert raw.status == 413, "raw-body dialects (Deepgram here) keep the same limit"


async def test_audio_longer_than_the_limit_is_413_before_any_decoding(limited_client: ClientFactory, prompt: Prompt) -> None:
    client = await limited_client(audio__max_duration_seconds=2)
    body, content_type = multipart(prompt.audio)
    answer = await client.post("/api/v1/jobs", data=body, headers={"Content-Type": content_type})
    assert answer.status == 413
    assert (await answer.json())["error"]["code"] == "audio_too_long"


def test_decoding_stops_at_the_duration_limit(prompt: Prompt) -> None:
    """Decoded size is bounded through duration (16 kHz float32: 64 KB per second and channel):
    the decoder gives up one second past the limit, whatever the header claimed."""
    with pytest.raises(AudioTooLong, match="at most 2 s"):
        decode_audio(prompt.audio, None, AudioLimits(max_duration_seconds=2, max_channels=8))
    data = bytearray(prompt.audio)
    marker = data.index(b"data")
    data[marker + 4 : marker + 8] = b"\xff\xff\xff\xff"  # "unknown length", as recorders write while recording
    with pytest.raises(AudioTooLong):
        decode_audio(bytes(data), None, AudioLimits(max_duration_seconds=2, max_channels=8))


async def test_too_many_channels_is_400(limited_client: ClientFactory) -> None:
    client = await limited_client(audio__max_channels=8)
    body, content_type = multipart(wav(channels=9, seconds=0.5))
    answer = await client.post("/api/v1/jobs", data=body, headers={"Content-Type": content_type})
    assert answer.status == 400
    assert (await answer.json())["error"]["code"] == "too_many_channels"
    body, content_type = multipart(wav(channels=8, seconds=0.5))
    assert (await client.post("/api/v1/jobs", data=body, headers={"Content-Type": content_type})).status == 202


async def test_uploads_past_max_concurrent_uploads_get_429_with_retry_after(
    limited_client: ClientFactory, prompt: Prompt
) -> None:
    client = await limited_client(server__max_concurrent_uploads=1)
    body, content_type = multipart(prompt.audio)
    reader, writer = await raw_request(client, upload_head(len(body), content_type))
    writer.write(body[:1000])  # the first upload is arriving and holds the only slot
    await writer.drain()
    await asyncio.sleep(0.3)

    refused = await client.post("/api/v1/jobs", data=body, headers={"Content-Type": content_type})
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"]["code"] == "too_many_uploads"
    assert (await client.get("/healthz")).status == 200, "requests without a body are not limited"

    writer.write(body[1000:])
    await writer.drain()
    status, _ = await status_of(reader)
    assert status == 202
    writer.close()
    other, content_type = multipart(prompt.audio, filename="second.wav")
    accepted = await client.post("/api/v1/jobs", data=other, headers={"Content-Type": content_type})
    assert accepted.status == 202, "the slot is free again once the body has arrived"


async def test_a_stalled_body_gets_408_and_frees_its_slot(limited_client: ClientFactory, prompt: Prompt) -> None:
    client = await limited_client(server__body_read_timeout_seconds=1, server__max_concurrent_uploads=1)
    body, content_type = multipart(prompt.audio)
    reader, writer = await raw_request(client, upload_head(len(body), content_type))
    writer.write(body[:500])
    await writer.drain()
    started = time.monotonic()
    status, answer = await status_of(reader)
    assert status == 408 and "request_timeout" in answer
    assert time.monotonic() - started < 10
    writer.close()
    again = await client.post("/api/v1/jobs", data=body, headers={"Content-Type": content_type})
    assert again.status == 202, "the stalled upload's slot was given back"


async def test_a_trickling_body_gets_408_too(limited_client: ClientFactory) -> None:
    """A deadline for the whole body, not for each read: a byte every 0.2 s never stalls, yet
    must not hold the connection for ever."""
    client = await limited_client(server__body_read_timeout_seconds=1)
    reader, writer = await raw_request(client, "POST /v1/listen HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 1000\r\n\r\n")
    status = None
    for _ in range(50):
        try:
            writer.write(b"\0")
            await writer.drain()
        except ConnectionError:
            break
        try:
            status, _ = await status_of(reader, timeout=0.2)
            break
        except asyncio.TimeoutError:
            continue
    writer.close()
    assert status == 408
