"""The IBM Watson dialect through the official ``ibm-watson`` SDK against real server processes.

``server`` (one key, shared by the session) serves the synchronous tests; ``watson_server`` has
two keys (listing is per key), callbacks to 127.0.0.1 allowed, strict model names, a small upload
limit and a 50 ms synchronous wait (the timeout path). A local HTTP receiver stands in for a client's callback
URL. Headerless bodies are made from real Asterisk prompts with numpy (mu-law by the G.711
formula), independently of the server's decoder.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import queue
import threading
import time
import wave
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from aiohttp import web
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import BasicAuthenticator
from ibm_watson import SpeechToTextV1

from asr_testkit import word_error_rate
from callpipe_asr.errors import QueueFull, UnsupportedAudio, WaitTimeout
from callpipe_asr.jobs import Job, JobStatus
from callpipe_asr.providers import watson
from callpipe_asr.transcript import AudioHints, RecognitionOptions, Segment, Transcript, Word
from callpipe_asr.web.routes_watson import render_watson_error
from server_testkit import TEST_KEY, Server, launch, stop

pytestmark = pytest.mark.filterwarnings(
    # server_testkit.launch hands Popen an unclosed log file object (the child keeps its own descriptor)
    r"ignore:Exception ignored in. <_io.FileIO name='.*server\.log':pytest.PytestUnraisableExceptionWarning"
)

KEY_A = "watson-key-a-0123456789"
KEY_B = "watson-key-b-0123456789"
USER_SECRET = "s3cret-for-signatures"
JOB_TIMEOUT_SECONDS = 90



# --- the one native error assertion ----------------------------------------------------------


def assert_watson_error(
    failure: ApiException | requests.Response | web.Response, status: int, contains: str | None = None
) -> str:
    """Watson's one error shape, ``{"code", "code_description", "error"}``, with ``code`` the
    HTTP status; the SDK's ``ApiException`` carries that status (``status_code``) and the
    ``error`` text (``message``)."""
    if isinstance(failure, ApiException):
        assert failure.http_response is not None
        actual, body = failure.http_response.status_code, failure.http_response.json()
        assert failure.status_code == status
    elif isinstance(failure, web.Response):
        assert isinstance(failure.body, bytes)
        actual, body = failure.status, json.loads(failure.body)
    else:
        actual, body = failure.status_code, failure.json()
    assert actual == status, body
    assert set(body) == {"code", "code_description", "error"}, body
    assert body["code"] == status
    assert body["code_description"] == HTTPStatus(status).phrase
    assert isinstance(body["error"], str) and body["error"]
    if isinstance(failure, ApiException):
        assert failure.message == body["error"]
    if contains is not None:
        assert contains in body["error"], body
    return str(body["error"])


# --- fixtures and helpers --------------------------------------------------------------------


def client(server: Server, key: str = TEST_KEY) -> SpeechToTextV1:
    """The SDK as a user points it at this server (README): Basic ``apikey:KEY``, service URL /watson."""
    stt = SpeechToTextV1(authenticator=BasicAuthenticator("apikey", key))
    stt.set_service_url(server.url + "/watson")
    return stt


def pcm16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        assert handle.getsampwidth() == 2 and handle.getnchannels() == 1 and handle.getframerate() == 8000
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")


def mulaw(samples: np.ndarray) -> bytes:
    """G.711 mu-law by the formula (bias 132, clip 32635, inverted bits)."""
    values = samples.astype(np.int32)
    sign = (values < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(values), 32635) + 132
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def wait_for_job(stt: SpeechToTextV1, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        job: dict[str, Any] = stt.check_job(job_id).get_result()
        if job["status"] in ("completed", "failed"):
            return job
        assert job["status"] in ("waiting", "processing")
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {JOB_TIMEOUT_SECONDS} s")


def transcript_of(results: dict[str, Any]) -> str:
    return " ".join(r["alternatives"][0]["transcript"] for r in results["results"])


class Receiver:
    """A client's callback URL on 127.0.0.1: echoes Watson's challenge, records notifications."""

    def __init__(self) -> None:
        self.challenges: queue.Queue[dict[str, str]] = queue.Queue()
        self.posts: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                challenge = parse_qs(urlsplit(self.path).query).get("challenge_string", [""])[0]
                receiver.challenges.put({"challenge_string": challenge, **dict(self.headers)})
                self._answer(challenge.encode())

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.posts.put((dict(self.headers), body))
                self._answer(b"ok")

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def watson_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(tmp_path_factory.mktemp("watson-server"), {
        "auth": {"api_keys": [KEY_A, KEY_B]},
        "server": {"max_upload_bytes": 200_000, "sync_wait_seconds": 0.05},
        "providers": {
            "allow_callbacks": True, "allowed_hosts": ["127.0.0.1"], "allow_private_addresses": True,
            "strict_model_names": True,
        },
        "jobs": {"poll_interval_seconds": 0.2},
    })
    yield running
    stop(running)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


# --- recognition through the SDK -------------------------------------------------------------


@pytest.mark.e2e
def test_sdk_recognizes_a_prompt_with_timestamps_and_word_confidence(server: Server, prompt: Any) -> None:
    with prompt.path.open("rb") as audio:
        response = client(server).recognize(
            audio=audio, content_type="audio/wav", model="en-US_Telephony", timestamps=True, word_confidence=True
        )
    assert response.get_status_code() == 200
    result = response.get_result()
    assert result["result_index"] == 0
    assert word_error_rate(prompt.text, transcript_of(result)) < 0.3
    previous_end = 0.0
    for item in result["results"]:
        assert item["final"] is True and "channel" not in item
        best = item["alternatives"][0]
        assert best["transcript"].endswith(" ") and 0.0 <= best["confidence"] <= 1.0
        assert [t[0] for t in best["timestamps"]] == [c[0] for c in best["word_confidence"]]
        for word, start, end in best["timestamps"]:
            assert previous_end - 0.01 <= start <= end <= 5.6, (word, start, end)
            previous_end = end
        assert all(0.0 <= c <= 1.0 for _, c in best["word_confidence"])


@pytest.mark.e2e
@pytest.mark.parametrize("content_type", ["audio/mulaw;rate=8000", "audio/l16;rate=8000"])
def test_headerless_audio_described_by_its_content_type(server: Server, prompts: dict[str, Any], content_type: str) -> None:
    """mu-law as a PBX records it, and Watson's ``audio/l16`` in network byte order with the
    endianness left to detection."""
    prompt = prompts["agent-pass" if content_type.startswith("audio/mulaw") else "conf-onlyperson"]
    samples = pcm16(prompt.path)
    body = mulaw(samples) if content_type.startswith("audio/mulaw") else samples.astype(">i2").tobytes()
    result = client(server).recognize(audio=io.BytesIO(body), content_type=content_type).get_result()
    assert word_error_rate(prompt.text, transcript_of(result)) < 0.3


@pytest.mark.e2e
def test_keywords_are_favoured_and_spotted(server: Server, prompts: dict[str, Any]) -> None:
    prompt = prompts["agent-pass"]  # "Please enter your password followed by the pound key."
    with prompt.path.open("rb") as audio:
        result = client(server).recognize(
            audio=audio, content_type="audio/wav", keywords=["password", "pound key", "voicemail"], keywords_threshold=0.2
        ).get_result()
    spotted: dict[str, list[dict[str, Any]]] = {}
    for item in result["results"]:
        spotted.update(item.get("keywords_result", {}))
    assert set(spotted) == {"password", "pound key"}
    (pound_key,) = spotted["pound key"]
    assert pound_key["normalized_text"].lower() == "pound key"
    assert 0.0 < pound_key["start_time"] < pound_key["end_time"] <= 3.4
    assert spotted["password"][0]["end_time"] <= pound_key["start_time"]
    assert all(0.2 <= match["confidence"] <= 1.0 for matches in spotted.values() for match in matches)


@pytest.mark.e2e
def test_async_jobs_belong_to_the_key_that_made_them_and_notify_a_registered_url(
    watson_server: Server, prompts: dict[str, Any], receiver: Receiver
) -> None:
    owner, other = client(watson_server, KEY_A), client(watson_server, KEY_B)
    hook = receiver.url + "/hooks/watson"
    registered = owner.register_callback(hook, user_secret=USER_SECRET)
    assert (registered.get_status_code(), registered.get_result()) == (201, {"status": "created", "url": hook})
    challenge = receiver.challenges.get(timeout=5)
    expected = base64.b64encode(hmac.new(USER_SECRET.encode(), challenge["challenge_string"].encode(), hashlib.sha1).digest())
    assert challenge["X-Callback-Signature"] == expected.decode()
    assert owner.register_callback(hook).get_result()["status"] == "already created"

    prompt = prompts["agent-pass"]
    with prompt.path.open("rb") as audio:
        created = owner.create_job(
            audio=audio, content_type="audio/wav", callback_url=hook, user_token="call-42",
            events="recognitions.completed_with_results", timestamps=True,
        )
    assert created.get_status_code() == 201
    job = created.get_result()
    assert job["status"] in ("waiting", "processing", "completed")
    assert job["url"] == f"{watson_server.url}/watson/v1/recognitions/{job['id']}"

    done = wait_for_job(owner, job["id"])
    assert done["status"] == "completed" and done["user_token"] == "call-42"
    assert word_error_rate(prompt.text, transcript_of(done["results"][0])) < 0.3
    assert done["results"][0]["results"][0]["alternatives"][0]["timestamps"]

    listed = owner.check_jobs().get_result()["recognitions"]
    assert [(j["id"], j["status"], j["user_token"]) for j in listed] == [(job["id"], "completed", "call-42")]
    assert other.check_jobs().get_result() == {"recognitions": []}
    with pytest.raises(ApiException) as refused:
        other.check_job(job["id"])
    assert_watson_error(refused.value, 404)

    headers, body = receiver.posts.get(timeout=30)
    notification = json.loads(body)
    assert {k: notification[k] for k in ("id", "event", "user_token")} == {
        "id": job["id"], "event": "recognitions.completed_with_results", "user_token": "call-42",
    }
    assert transcript_of(notification["results"][0]) == transcript_of(done["results"][0])
    assert headers["X-Callback-Signature"] == base64.b64encode(hmac.new(USER_SECRET.encode(), body, hashlib.sha1).digest()).decode()

    assert owner.delete_job(job["id"]).get_status_code() == 204
    with pytest.raises(ApiException) as gone:
        owner.check_job(job["id"])
    assert_watson_error(gone.value, 404)
    assert owner.unregister_callback(hook).get_status_code() == 200


@pytest.mark.e2e
def test_a_synchronous_wait_that_runs_out_is_504_and_the_same_request_attaches_to_the_job(
    watson_server: Server, prompts: dict[str, Any]
) -> None:
    prompt = prompts["conf-getpin"]
    url = f"{watson_server.url}/v1/recognize?model=tiny.en"
    post = lambda: requests.post(  # noqa: E731
        url, data=prompt.audio, headers={"Content-Type": "audio/wav"}, auth=("apikey", KEY_B), timeout=30
    )
    assert_watson_error(post(), 504, "goes on")
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    response = post()
    while response.status_code == 504 and time.monotonic() < deadline:
        time.sleep(0.3)
        response = post()
    assert response.status_code == 200, response.text
    assert word_error_rate(prompt.text, transcript_of(response.json())) < 0.3
    assert client(watson_server, KEY_B).check_jobs().get_result() == {"recognitions": []}  # not an async job


# --- models and errors -----------------------------------------------------------------------


def test_models_are_listed_under_watson(server: Server) -> None:
    stt = client(server)
    names = [m["name"] for m in stt.list_models().get_result()["models"]]
    assert {"en-US_Telephony", "en-US_NarrowbandModel", "en-US_BroadbandModel", "tiny.en"} <= set(names)
    model = stt.get_model("en-US_Telephony").get_result()
    assert (model["language"], model["rate"], model["url"]) == ("en-US", 8000, f"{server.url}/watson/v1/models/en-US_Telephony")
    with pytest.raises(ApiException) as missing:
        stt.get_model("xx-XX_Imaginary")
    assert_watson_error(missing.value, 404, "xx-XX_Imaginary")


def test_undecodable_audio_is_400_with_our_message(server: Server) -> None:
    with pytest.raises(ApiException) as failure:
        client(server).recognize(audio=io.BytesIO(b"this is not audio " * 40), content_type="audio/wav")
    assert_watson_error(failure.value, 400, "not a recognised audio format")


def test_a_wrong_or_missing_key_is_401(server: Server) -> None:
    with pytest.raises(ApiException) as wrong:
        client(server, "not-the-key").recognize(audio=io.BytesIO(b"x" * 200), content_type="audio/wav")
    assert_watson_error(wrong.value, 401)
    assert_watson_error(requests.post(f"{server.url}/v1/recognitions", data=b"x" * 200, timeout=10), 401)
    bearer = requests.get(f"{server.url}/v1/recognitions", headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=10)
    assert bearer.status_code == 200 and "recognitions" in bearer.json()


@pytest.mark.parametrize(
    ("content_type", "query", "status", "contains"),
    [
        ("text/plain", "", 415, "Unsupported content type 'text/plain'"),
        ("audio/l16", "", 400, "requires the parameter 'rate'"),
        ("audio/l16;rate=8000;endianness=middle", "", 400, "endianness"),
        ("audio/wav", "timestamps=maybe", 400, "timestamps"),
        ("audio/wav", "keywords=a&keywords_threshold=2", 400, "keywords_threshold"),
    ],
)
def test_malformed_requests_are_native_errors_at_the_root_path(
    server: Server, content_type: str, query: str, status: int, contains: str
) -> None:
    response = requests.post(
        f"{server.url}/v1/recognize?{query}", data=b"\0" * 400, headers={"Content-Type": content_type},
        auth=("apikey", TEST_KEY), timeout=10,
    )
    assert_watson_error(response, status, contains)


def test_callback_registration_and_callback_urls_are_400_unless_allowed(server: Server) -> None:
    stt = client(server)
    with pytest.raises(ApiException) as registration:
        stt.register_callback("http://127.0.0.1:9/hook")
    assert_watson_error(registration.value, 400)
    with pytest.raises(ApiException) as job:
        stt.create_job(audio=io.BytesIO(b"\0" * 400), content_type="audio/wav", callback_url="http://127.0.0.1:9/hook")
    assert_watson_error(job.value, 400)


def test_strict_model_names_refuse_watson_names_with_404(watson_server: Server) -> None:
    stt = client(watson_server, KEY_A)
    assert [m["name"] for m in stt.list_models().get_result()["models"]] == ["tiny.en", "base"]  # configured names only
    with pytest.raises(ApiException) as refused:
        stt.recognize(audio=io.BytesIO(b"\0" * 400), content_type="audio/wav", model="en-US_Telephony")
    assert_watson_error(refused.value, 404, "en-US_Telephony")


def test_an_upload_over_the_limit_is_413(watson_server: Server) -> None:
    response = requests.post(
        f"{watson_server.url}/watson/v1/recognize", data=b"\0" * 300_000, headers={"Content-Type": "audio/wav"},
        auth=("apikey", KEY_A), timeout=10,
    )
    assert_watson_error(response, 413)


def test_queue_full_and_timeouts_render_natively() -> None:
    full = render_watson_error(QueueFull("the queue is full", retry_after_seconds=7))
    assert_watson_error(full, 429, "the queue is full")
    assert full.headers["Retry-After"] == "7"
    assert_watson_error(render_watson_error(WaitTimeout("still running; it goes on")), 504)
    assert_watson_error(render_watson_error(UnsupportedAudio("no audio stream")), 400, "no audio stream")


# --- the pure translation --------------------------------------------------------------------


def test_l16_byte_order_is_detected_from_the_samples(prompt: Any) -> None:
    samples = pcm16(prompt.path)
    assert watson.l16_byte_order(samples.astype("<i2").tobytes()) == "s16le"
    assert watson.l16_byte_order(samples.astype(">i2").tobytes()) == "s16be"
    stereo = np.stack([samples, samples[::-1]], axis=1)
    assert watson.l16_byte_order(stereo.astype(">i2").tobytes(), channels=2) == "s16be"
    assert watson.audio_hints("audio/basic", b"") == AudioHints("mulaw", 8000, 1)
    assert watson.audio_hints("audio/l16; rate=16000; channels=2; endianness=little-endian", b"") == AudioHints("s16le", 16000, 2)
    assert watson.audio_hints("application/octet-stream", b"") is None


def _job(transcript: Transcript | None, metadata: dict[str, Any], status: JobStatus = JobStatus.DONE) -> Job:
    return Job(
        id="job-1", status=status, created_at=1_700_000_000.0, options=RecognitionOptions(), hints=None,
        dialect=watson.DIALECT, attempts=1, finished_at=1_700_000_003.5, transcript=transcript, metadata=metadata,
        error="the audio is damaged" if status is JobStatus.FAILED else None,
        error_code="corrupt_audio" if status is JobStatus.FAILED else None,
    )


def test_split_channels_are_marked_and_silence_is_an_empty_result() -> None:
    words = (Word("Hello", 0.1, 0.4, 0.9),)
    transcript = Transcript(
        segments=(Segment(" Hello", 0.1, 0.4, words, channel=0), Segment(" Hi there.", 0.5, 1.0, (), channel=1)),
        language="en", duration=2.0, channels=2,
    )
    render = watson.RenderOptions(timestamps=True)
    results = watson.results_document(transcript, render)["results"]
    assert [(r["channel"], r["alternatives"][0]["transcript"]) for r in results] == [(0, "Hello "), (1, "Hi there. ")]
    assert results[0]["alternatives"][0]["timestamps"] == [["Hello", 0.1, 0.4]]
    silent = Transcript(segments=(), language="en", duration=3.0)
    assert watson.results_document(silent, watson.RenderOptions()) == {"results": [], "result_index": 0}


def test_callback_payload_follows_the_subscribed_events_and_is_signed() -> None:
    transcript = Transcript(segments=(Segment(" Goodbye.", 0.0, 0.8),), language="en", duration=1.0)
    metadata = {"asynchronous": True, "render": {}, "user_token": "t", "events": ["recognitions.completed"], "user_secret": "k"}
    body, headers = watson.callback_payload(_job(transcript, metadata))
    assert json.loads(body) == {"id": "job-1", "event": "recognitions.completed", "user_token": "t"}
    assert headers["X-Callback-Signature"] == base64.b64encode(hmac.new(b"k", body, hashlib.sha1).digest()).decode()
    failed, failed_headers = watson.callback_payload(_job(None, {"asynchronous": True, "render": {}}, JobStatus.FAILED))
    assert json.loads(failed) == {"id": "job-1", "event": "recognitions.failed"}
    assert "X-Callback-Signature" not in failed_headers
    assert watson.job_document(_job(None, {"asynchronous": True}, JobStatus.FAILED), "http://h")["warnings"] == [
        "The job failed: the audio is damaged"
    ]
