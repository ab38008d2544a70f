"""The Deepgram dialect through the official ``deepgram-sdk`` v7 against real server processes.

``server`` (one key, shared by the session, remote audio and callbacks off) serves the file
tests; ``deepgram_server`` also fetches and calls back to 127.0.0.1, knows only configured model
names and has a small upload limit.
A local HTTP receiver serves the audio for ``url`` requests and records callbacks. The stereo
and headerless bodies are made from real Asterisk prompts with numpy and the stdlib.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest
import requests
from aiohttp import web
from deepgram import DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.errors import BadRequestError
from deepgram.types import ListenV1Response

from asr_testkit import word_error_rate
from callpipe_asr.errors import QueueFull, WaitTimeout
from callpipe_asr.jobs import Job, JobStatus
from callpipe_asr.providers import deepgram
from callpipe_asr.transcript import RecognitionOptions, Segment, Transcript, Word
from callpipe_asr.web.routes_deepgram import render_deepgram_error
from server_testkit import TEST_KEY, Server, launch, stop

pytestmark = [
    pytest.mark.filterwarnings(
        # server_testkit.launch hands Popen an unclosed log file object (the child keeps its own descriptor)
        r"ignore:Exception ignored in. <_io.FileIO name='.*server\.log':pytest.PytestUnraisableExceptionWarning"
    ),
    # deepgram-sdk 7.17.0 imports websockets' legacy names (deprecated in websockets 14) when its
    # listen client loads
    pytest.mark.filterwarnings("ignore:websockets.exceptions.InvalidStatusCode is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
]

STEREO_PROMPTS = ("agent-pass", "conf-onlyperson")



# --- the one native error assertion ----------------------------------------------------------


def assert_deepgram_error(
    failure: ApiError | requests.Response | web.Response, status: int, err_code: str, contains: str | None = None
) -> str:
    """Deepgram's one error shape, ``{"err_code", "err_msg", "request_id"}``, the request id also
    in ``dg-request-id``; the SDK raises ``ApiError`` (``BadRequestError`` for 400) with the body
    parsed."""
    if isinstance(failure, ApiError):
        actual, body, headers = failure.status_code, failure.body, dict(failure.headers or {})
        assert isinstance(failure, BadRequestError) == (status == 400)
    elif isinstance(failure, web.Response):
        assert isinstance(failure.body, bytes)
        actual, body, headers = failure.status, json.loads(failure.body), dict(failure.headers)
    else:
        actual, body, headers = failure.status_code, failure.json(), dict(failure.headers)
    assert actual == status, body
    assert isinstance(body, dict) and set(body) == {"err_code", "err_msg", "request_id"}, body
    assert body["err_code"] == err_code, body
    assert isinstance(body["err_msg"], str) and body["err_msg"]
    assert body["request_id"] and {k.lower(): v for k, v in headers.items()}["dg-request-id"] == body["request_id"]
    if contains is not None:
        assert contains in body["err_msg"], body
    return str(body["err_msg"])


# --- fixtures and helpers --------------------------------------------------------------------


Connect = Callable[..., DeepgramClient]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """``connect(server, key=TEST_KEY)``: the v7 SDK as docs/providers.md 5.4 points it at a local
    server, on an HTTP client that is closed after the test."""
    http_clients: list[httpx.Client] = []

    def make(server: Server, key: str = TEST_KEY) -> DeepgramClient:
        ws = server.url.replace("http://", "ws://")
        environment = DeepgramClientEnvironment(base=server.url, production=ws, agent=ws, agent_rest=server.url)
        http_clients.append(httpx.Client(timeout=120))
        return DeepgramClient(api_key=key, environment=environment, httpx_client=http_clients[-1])

    yield make
    for http_client in http_clients:
        http_client.close()


def pcm16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        assert handle.getsampwidth() == 2 and handle.getnchannels() == 1 and handle.getframerate() == 8000
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")


def stereo_wav(left: np.ndarray, right: np.ndarray) -> bytes:
    """Two parties of a call, one per channel, the shorter padded with silence."""
    length = max(len(left), len(right))
    frames = np.zeros((length, 2), dtype="<i2")
    frames[: len(left), 0] = left
    frames[: len(right), 1] = right
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(frames.tobytes())
    return buffer.getvalue()


def transcript(response: Any, channel: int = 0) -> str:
    return str(response.results.channels[channel].alternatives[0].transcript)


class Receiver:
    """A client's web server on 127.0.0.1: serves ``files`` to GET, records every POST."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.posts: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.posts.put((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def deepgram_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(tmp_path_factory.mktemp("deepgram-server"), {
        "auth": {"api_keys": [TEST_KEY]},
        "server": {"max_upload_bytes": 200_000},
        "providers": {
            "allow_remote_audio": True, "allow_callbacks": True, "allowed_hosts": ["127.0.0.1"],
            "allow_private_addresses": True, "strict_model_names": True,
        },
        "jobs": {"poll_interval_seconds": 0.2},
    })
    yield running
    stop(running)


# --- recognition through the SDK -------------------------------------------------------------


@pytest.mark.e2e
def test_sdk_transcribes_a_prompt_with_word_timings(server: Server, prompt: Any, connect: Connect) -> None:
    response = connect(server).listen.v1.media.transcribe_file(request=prompt.audio, model="nova-3", smart_format=True)
    assert isinstance(response, ListenV1Response)
    ListenV1Response.model_validate(response.model_dump(mode="json"))  # every field the SDK requires is there
    assert word_error_rate(prompt.text, transcript(response)) < 0.3
    metadata = response.metadata
    assert metadata.sha256 == hashlib.sha256(prompt.audio).hexdigest()
    assert metadata.channels == 1 and abs(metadata.duration - 5.52) < 0.1
    assert metadata.request_id and metadata.model_info[metadata.models[0]]["name"] == "nova-3"
    words = response.results.channels[0].alternatives[0].words
    assert words is not None and len(words) >= 10
    previous_end = 0.0
    for word in words:
        assert word.word == word.word.lower() and word.word.strip(".,?!") == word.word
        assert previous_end - 0.01 <= word.start <= word.end <= 5.6, word
        assert 0.0 <= word.confidence <= 1.0
        previous_end = word.end
    assert str(getattr(words[-1], "punctuated_word", "")).rstrip(".!") == "key"  # kept via the SDK's extra="allow"


@pytest.mark.e2e
def test_multichannel_gives_each_party_its_own_channel(server: Server, prompts: dict[str, Any], connect: Connect) -> None:
    left, right = (prompts[name] for name in STEREO_PROMPTS)
    audio = stereo_wav(pcm16(left.path), pcm16(right.path))
    response = connect(server).listen.v1.media.transcribe_file(request=audio, multichannel=True, punctuate=True)
    assert response.metadata.channels == 2 and len(response.results.channels) == 2
    assert word_error_rate(left.text, transcript(response, 0)) < 0.3
    assert word_error_rate(right.text, transcript(response, 1)) < 0.3


@pytest.mark.e2e
def test_headerless_linear16_with_encoding_and_sample_rate(server: Server, prompts: dict[str, Any], connect: Connect) -> None:
    prompt = prompts["conf-getpin"]
    response = connect(server).listen.v1.media.transcribe_file(
        request=pcm16(prompt.path).tobytes(), encoding="linear16",
        request_options={"additional_query_parameters": {"sample_rate": 8000, "channels": 1}},
    )
    assert word_error_rate(prompt.text, transcript(response)) < 0.3
    assert transcript(response) == transcript(response).lower()  # Deepgram's bare text without punctuate


@pytest.mark.e2e
def test_url_audio_and_callback_when_the_config_allows_them(deepgram_server: Server, prompts: dict[str, Any], connect: Connect) -> None:
    prompt = prompts["agent-pass"]
    receiver = Receiver({"/calls/agent-pass.wav": prompt.audio})
    try:
        accepted = connect(deepgram_server).listen.v1.media.transcribe_url(
            url=receiver.url + "/calls/agent-pass.wav", callback=receiver.url + "/hooks/deepgram", utterances=True
        )
        path, headers, body = receiver.posts.get(timeout=60)
    finally:
        receiver.close()
    assert accepted.request_id and path == "/hooks/deepgram"
    assert headers["Content-Type"] == "application/json"
    result = ListenV1Response.model_validate(json.loads(body))
    assert result.metadata.request_id == accepted.request_id
    assert result.metadata.sha256 == hashlib.sha256(prompt.audio).hexdigest()
    assert word_error_rate(prompt.text, transcript(result)) < 0.3
    assert result.results.utterances and result.results.utterances[0].words


# --- errors ----------------------------------------------------------------------------------


def test_undecodable_audio_is_400(server: Server, connect: Connect) -> None:
    with pytest.raises(ApiError) as failure:
        connect(server).listen.v1.media.transcribe_file(request=b"this is not audio " * 40)
    assert_deepgram_error(failure.value, 400, "Bad Request", "failed to process audio")


def test_a_wrong_or_missing_key_is_401_and_bearer_is_accepted(server: Server, connect: Connect) -> None:
    with pytest.raises(ApiError) as wrong:
        connect(server, "not-the-key").listen.v1.media.transcribe_file(request=b"\0" * 400)
    assert_deepgram_error(wrong.value, 401, "INVALID_AUTH")
    assert_deepgram_error(requests.post(f"{server.url}/deepgram/v1/listen", data=b"\0" * 400, timeout=10), 401, "INVALID_AUTH")
    bearer = requests.post(
        f"{server.url}/v1/listen", data=b"not audio" * 50, headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=10
    )
    assert_deepgram_error(bearer, 400, "Bad Request")


def test_url_input_and_callbacks_are_refused_by_default(server: Server, connect: Connect) -> None:
    listen = connect(server).listen.v1.media
    with pytest.raises(ApiError) as url:
        listen.transcribe_url(url="https://example.com/call.wav")
    assert_deepgram_error(url.value, 403, "REMOTE_CONTENT_ERROR")
    with pytest.raises(ApiError) as callback:
        listen.transcribe_file(request=b"\0" * 400, callback="https://example.com/hook")
    assert_deepgram_error(callback.value, 400, "Bad Request", "callback")


@pytest.mark.parametrize(
    ("query", "body", "contains"),
    [
        ("encoding=linear16", b"\0" * 400, "needs a sample_rate"),
        ("encoding=speex&sample_rate=8000", b"\0" * 400, "speex"),
        ("punctuate=sometimes", b"\0" * 400, "punctuate"),
        ("callback_method=PUT&callback=http://127.0.0.1:9/", b"\0" * 400, "callback_method"),
        ("", b"{not json", "JSON"),
    ],
)
def test_malformed_requests_are_400(server: Server, query: str, body: bytes, contains: str) -> None:
    content_type = "application/json" if body.startswith(b"{") else "application/octet-stream"
    response = requests.post(
        f"{server.url}/v1/listen?{query}", data=body,
        headers={"Authorization": f"Token {TEST_KEY}", "Content-Type": content_type}, timeout=10,
    )
    assert_deepgram_error(response, 400, "Bad Request", contains)


def test_strict_model_names_refuse_deepgram_names_with_400(deepgram_server: Server, connect: Connect) -> None:
    with pytest.raises(ApiError) as refused:
        connect(deepgram_server).listen.v1.media.transcribe_file(request=b"\0" * 400, model="nova-3")
    assert_deepgram_error(refused.value, 400, "Bad Request", "nova-3")


def test_an_upload_over_the_limit_is_413(deepgram_server: Server) -> None:
    response = requests.post(
        f"{deepgram_server.url}/v1/listen", data=b"\0" * 300_000, headers={"Authorization": f"Token {TEST_KEY}"}, timeout=10
    )
    assert_deepgram_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_queue_full_and_timeouts_render_natively() -> None:
    full = render_deepgram_error(QueueFull("the queue is full", retry_after_seconds=4))
    assert_deepgram_error(full, 429, "TOO_MANY_REQUESTS", "the queue is full")
    assert full.headers["Retry-After"] == "4"
    timeout = render_deepgram_error(WaitTimeout("still running; it goes on"), request_id="job-7")
    assert_deepgram_error(timeout, 504, "GATEWAY_TIMEOUT")
    assert json.loads(timeout.body)["request_id"] == "job-7"  # type: ignore[arg-type]


# --- the pure translation --------------------------------------------------------------------


def _job(transcript: Transcript | None, query: list[tuple[str, str]], status: JobStatus = JobStatus.DONE) -> Job:
    request = deepgram.parse_listen(query)
    return Job(
        id="job-1", status=status, created_at=1_700_000_000.0, options=request.options, hints=request.hints,
        dialect=deepgram.DIALECT, attempts=1, transcript=transcript, metadata=deepgram.job_metadata(request, b"audio"),
        error="the engine crashed" if status is JobStatus.FAILED else None,
    )


def _call() -> Transcript:
    hello = (Word(" Hello,", 0.1, 0.4, 0.9), Word(" there.", 0.4, 0.8, 0.8))
    fine = (Word(" Fine.", 1.0, 1.3, 0.7),)
    return Transcript(
        segments=(Segment(" Hello, there.", 0.1, 0.8, hello, channel=0), Segment(" Fine.", 1.0, 1.3, fine, channel=1)),
        language="en", duration=2.0, channels=2, model="tiny.en",
    )


def test_channels_render_apart_with_multichannel_and_as_one_dialogue_without() -> None:
    split = deepgram.response_document(_job(_call(), [("multichannel", "true"), ("utterances", "true")]))
    channels = split["results"]["channels"]
    assert [c["alternatives"][0]["transcript"] for c in channels] == ["hello there", "fine"]
    assert channels[0]["alternatives"][0]["words"][0] == {
        "word": "hello", "start": 0.1, "end": 0.4, "confidence": 0.9, "punctuated_word": "Hello,",
    }
    assert [(u["channel"], u["transcript"]) for u in split["results"]["utterances"]] == [(0, "hello there"), (1, "fine")]
    merged = deepgram.response_document(_job(_call(), [("punctuate", "true")]))
    assert merged["metadata"]["channels"] == 1
    assert [c["alternatives"][0]["transcript"] for c in merged["results"]["channels"]] == ["Hello, there. Fine."]
    ListenV1Response.model_validate(split)


def test_no_speech_is_an_empty_transcript_and_a_failed_callback_is_an_error_document() -> None:
    silent = Transcript(segments=(), language="en", duration=3.0, model="tiny.en")
    document = deepgram.response_document(_job(silent, []))
    assert document["results"]["channels"] == [{"alternatives": [{"transcript": "", "confidence": 0.0, "words": []}]}]
    ListenV1Response.model_validate(document)
    body, headers = deepgram.callback_payload(_job(None, [], JobStatus.FAILED))
    assert json.loads(body) == {"err_code": "UNPROCESSABLE_ENTITY", "err_msg": "the engine crashed", "request_id": "job-1"}
    assert headers["dg-request-id"] == "job-1"
    options = deepgram.parse_listen([("keywords", "snuffleupagus:5"), ("keywords", "Asterisk"), ("keyterm", "FusionPBX")])
    assert options.options == RecognitionOptions(language="en", prompt="FusionPBX", hotwords=("snuffleupagus", "Asterisk"))
