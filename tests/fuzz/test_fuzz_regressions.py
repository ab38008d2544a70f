"""What fuzzing found, kept found: each input that once escaped a parser as a plain exception
(a 500 to the client) now gets the dialect's own 400. Parser-level checks, then the same inputs
over HTTP against the real app. The inputs are also seeds under ``corpus/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from callpipe_asr.audio.decode import AudioLimits, probe_audio
from callpipe_asr.errors import CorruptAudio, InvalidRequest
from callpipe_asr.providers import assemblyai, deepgram, google, watson
from callpipe_asr.settings import Settings
from callpipe_asr.web.app import create_app

UNICODE_DIGIT = "\u00b2"
"""'²': ``str.isdigit()`` says yes, ``int()`` says no."""
DEEP_JSON = b"[" * 3000
"""Deeper than Python's JSON decoder recurses: RecursionError, not ValueError."""
LONG_NUMBER = "9" * 5000
"""More digits than ``int()`` converts."""
BROKEN_URL = "https://example]com/v2/upload/abc"
"""``urlsplit`` raises "Invalid IPv6 URL" (found by atheris in the AssemblyAI target)."""
CORPUS = Path(__file__).parent / "corpus"


def google_body(**config: Any) -> bytes:
    return json.dumps({"config": config, "audio": {"content": "UklGRg=="}}).encode()


@pytest.mark.parametrize(
    "parse",
    [
        lambda: deepgram.parse_listen([("encoding", "linear16"), ("sample_rate", UNICODE_DIGIT)]),
        lambda: deepgram.parse_listen([("encoding", "linear16"), ("sample_rate", LONG_NUMBER)]),
        lambda: deepgram.parse_url_body(DEEP_JSON),
        lambda: watson.audio_hints(f"audio/mulaw;rate={UNICODE_DIGIT}", b"\xff\xff"),
        lambda: watson.audio_hints(f"audio/l16;rate=8000;channels={LONG_NUMBER}", b"\0\0"),
        lambda: google.parse_request(DEEP_JSON),
        lambda: google.parse_request(google_body(sampleRateHertz=LONG_NUMBER)),
        lambda: google.parse_request(google_body(encoding=UNICODE_DIGIT)),
        lambda: assemblyai.parse_transcript_request(DEEP_JSON),
        lambda: assemblyai.parse_list_query({"limit": UNICODE_DIGIT}),
        lambda: assemblyai.parse_chars_per_caption(UNICODE_DIGIT),
    ],
    ids=[
        "deepgram-unicode-rate", "deepgram-long-rate", "deepgram-deep-json", "watson-unicode-rate",
        "watson-long-channels", "google-deep-json", "google-long-rate", "google-unicode-encoding",
        "assemblyai-deep-json", "assemblyai-unicode-limit", "assemblyai-unicode-caption",
    ],
)
def test_the_input_is_a_bad_request_not_a_crash(parse: Callable[[], object]) -> None:
    with pytest.raises(InvalidRequest):
        parse()


def test_an_unparseable_audio_url_is_not_an_upload_of_ours() -> None:
    assert assemblyai.upload_token(BROKEN_URL) is None
    assert assemblyai.upload_token("https://host/v2/upload/" + "a" * 22) == "a" * 22


def test_a_stream_that_refuses_to_rewind_is_corrupt_audio() -> None:
    """Found by atheris: a damaged WebM whose duration must be counted from its packets made
    FFmpeg refuse the seek back to the start (EPERM), outside the probe's error handling."""
    data = (CORPUS / "audio_probe" / "seek-refused.webm").read_bytes()[1:]  # first byte: the target's hint selector
    with pytest.raises(CorruptAudio):
        probe_audio(data, None, AudioLimits(max_duration_seconds=60, max_channels=8))


def test_ascii_numbers_still_parse() -> None:
    assert deepgram.parse_listen([("encoding", "linear16"), ("sample_rate", "8000")]).hints.sample_rate_hz == 8000
    assert watson.audio_hints("audio/l16;rate=16000;channels=2", b"\0\0\0\0").channels == 2
    assert google.parse_request(google_body(encoding="2", sampleRateHertz="8000")).encoding == google.AUDIO_ENCODINGS[2]
    assert assemblyai.parse_list_query({"limit": "20"}).limit == 20
    assert assemblyai.parse_chars_per_caption(" 32 ") == 32


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[TestClient]], make_settings: Callable[..., Settings]) -> TestClient:
    return await aiohttp_client(create_app(make_settings(), run_workers=False))


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        ("POST", f"/v1/listen?encoding=linear16&sample_rate={UNICODE_DIGIT}", {"Content-Type": "audio/raw"}, b"\0" * 64),
        ("POST", "/v1/listen", {"Content-Type": "application/json"}, DEEP_JSON),
        ("POST", "/v1/speech:recognize", {"Content-Type": "application/json"}, DEEP_JSON),
        ("POST", "/v1/speech:recognize", {"Content-Type": "application/json"}, google_body(sampleRateHertz=LONG_NUMBER)),
        ("POST", "/v2/transcript", {"Content-Type": "application/json"}, DEEP_JSON),
        ("GET", f"/v2/transcript?limit={UNICODE_DIGIT}", {}, None),
        ("POST", "/watson/v1/recognize", {"Content-Type": f"audio/mulaw;rate={UNICODE_DIGIT}"}, b"\xff" * 64),
        ("POST", "/v2/transcript", {"Content-Type": "application/json"}, json.dumps({"audio_url": BROKEN_URL}).encode()),
    ],
    ids=[
        "deepgram-rate", "deepgram-json", "google-json", "google-rate", "assemblyai-json", "assemblyai-limit",
        "watson-rate", "assemblyai-broken-url",
    ],
)
async def test_over_http_the_answer_is_a_4xx(
    client: TestClient, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> None:
    answer = await client.request(method, path, headers=headers, data=body)
    assert answer.status in (400, 415), (answer.status, await answer.text())
