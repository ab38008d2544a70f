"""The Google Cloud Speech dialect: the official SDK (google-cloud-speech==2.41.0, REST
transport, v1 and v1p1beta1) and curl-style JSON against a real server process with the real
bundled model and real Asterisk recordings, plus the pure translation in
``callpipe_asr.providers.google``.

The SDK's REST transport picks its exception class from the HTTP status alone (400 is
``BadRequest``, never its subclass ``InvalidArgument``), so errors are checked by status and by
the ``google.rpc.Status`` body the SDK parsed.
"""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import time
import wave
from types import ModuleType
from typing import Any, Iterator

import numpy as np
import pytest
import requests
from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import speech_v1, speech_v1p1beta1

from asr_testkit import word_error_rate
from callpipe_asr.errors import CorruptAudio, InvalidRequest, QueueFull, WaitTimeout
from callpipe_asr.jobs import Job, JobProgress, JobStatus
from callpipe_asr.providers import google as dialect
from callpipe_asr.transcript import AudioHints, ChannelMode, RecognitionOptions, Segment, Transcript, Word
from callpipe_asr.web.routes_google import render_google_error
from server_testkit import TEST_KEY, Server, launch, stop

OTHER_KEY = "other-key-9876543210"
TIMEOUT_SECONDS = 120



def assert_google_error(status: int, body: Any, expected_status: int, grpc_status: str) -> dict[str, Any]:
    """The one shape of every Google error: ``google.rpc.Status`` JSON with the HTTP status, a
    message and the canonical code name that goes with it."""
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "status", "details"}
    assert error["code"] == expected_status
    assert error["status"] == grpc_status
    assert isinstance(error["message"], str) and error["message"]
    return error


def assert_sdk_error(exc: google_exceptions.GoogleAPICallError, expected_status: int, grpc_status: str) -> dict[str, Any]:
    response = exc.response
    assert response is not None
    return assert_google_error(response.status_code, response.json(), expected_status, grpc_status)


def speech_client(url: str, module: ModuleType = speech_v1, key: str | None = TEST_KEY) -> Any:
    """The SDK pointed at a local server as docs/providers.md section 2.8 shows."""
    if key is None:
        return module.SpeechClient(
            client_options=ClientOptions(api_endpoint=url), transport="rest", credentials=AnonymousCredentials()
        )
    return module.SpeechClient(client_options=ClientOptions(api_endpoint=url, api_key=key), transport="rest")


def wav_seconds(audio: bytes) -> float:
    with wave.open(io.BytesIO(audio)) as reader:
        return reader.getnframes() / reader.getframerate()


def wav_bytes(samples: np.ndarray, rate_hz: int = 8000) -> bytes:
    """16-bit PCM WAV; ``samples`` is (frames,) or (frames, channels) int16."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(frames.shape[1])
        writer.setsampwidth(2)
        writer.setframerate(rate_hz)
        writer.writeframes(frames.astype("<i2").tobytes())
    return buffer.getvalue()


def pcm_of(audio: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(audio)) as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


def post_json(url: str, body: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return requests.post(url, data=json.dumps(body), headers=headers, timeout=TIMEOUT_SECONDS, **kwargs)


def config(**fields: Any) -> Any:
    return speech_v1.RecognitionConfig(language_code="en-US", **fields)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two keys, strict model names and no synchronous wait at all."""
    running = launch(
        tmp_path_factory.mktemp("google-strict"),
        {
            "auth": {"api_keys": [TEST_KEY, OTHER_KEY]},
            "providers": {"strict_model_names": True},
            "server": {"sync_wait_seconds": 0},
        },
    )
    yield running
    stop(running)


# --- the SDK against a real server -----------------------------------------------------------


@pytest.mark.e2e
def test_sdk_recognizes_a_telephone_prompt_with_word_offsets(server: Server, prompt: Any) -> None:
    client = speech_client(server.url)
    response = client.recognize(
        config=config(
            encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=8000,
            enable_word_time_offsets=True,
            enable_word_confidence=True,
            enable_automatic_punctuation=True,
            model="phone_call",
        ),
        audio=speech_v1.RecognitionAudio(content=prompt.audio),
        timeout=TIMEOUT_SECONDS,
    )
    assert len(response.results) == 1
    result = response.results[0]
    alternative = result.alternatives[0]
    assert word_error_rate(prompt.text, alternative.transcript) < 0.3
    assert 0 < alternative.confidence <= 1
    assert result.language_code == "en-us"
    seconds = wav_seconds(prompt.audio)
    assert response.total_billed_time.total_seconds() == math.ceil(seconds)
    assert response.request_id > 0
    starts = [w.start_time.total_seconds() for w in alternative.words]
    assert starts == sorted(starts) and len(starts) >= 10
    for word in alternative.words:
        assert word.word and 0 <= word.start_time.total_seconds() <= word.end_time.total_seconds() <= seconds + 0.5
        assert 0 <= word.confidence <= 1
    assert result.result_end_time.total_seconds() == pytest.approx(alternative.words[-1].end_time.total_seconds())


@pytest.mark.e2e
def test_long_running_recognize_of_headerless_mulaw(server: Server, prompt: Any) -> None:
    mulaw = subprocess.run(["sox", str(prompt.path), "-t", "ul", "-r", "8000", "-"], check=True, capture_output=True).stdout
    client = speech_client(server.url)
    operation = client.long_running_recognize(
        config=config(encoding=speech_v1.RecognitionConfig.AudioEncoding.MULAW, sample_rate_hertz=8000),
        audio=speech_v1.RecognitionAudio(content=mulaw),
    )
    result = operation.result(timeout=TIMEOUT_SECONDS)
    assert word_error_rate(prompt.text, result.results[0].alternatives[0].transcript) < 0.3
    assert "." not in result.results[0].alternatives[0].transcript  # no punctuation unless asked for
    assert not result.results[0].alternatives[0].words  # no words unless asked for
    assert operation.metadata.progress_percent == 100
    polled = requests.get(f"{server.url}/v1/operations/{operation.operation.name}", params={"key": TEST_KEY}, timeout=30).json()
    assert set(polled) == {"name", "metadata", "done", "response"}
    assert polled["metadata"]["@type"] == "type.googleapis.com/google.cloud.speech.v1.LongRunningRecognizeMetadata"
    assert polled["response"]["@type"] == "type.googleapis.com/google.cloud.speech.v1.LongRunningRecognizeResponse"
    listed = requests.get(f"{server.url}/v1/operations", headers={"x-goog-api-key": TEST_KEY}, timeout=30).json()
    assert operation.operation.name in [o["name"] for o in listed["operations"]]


@pytest.mark.e2e
def test_v1p1beta1_client_with_speech_contexts(server: Server, prompt: Any) -> None:
    client = speech_client(server.url, speech_v1p1beta1)
    beta_config = speech_v1p1beta1.RecognitionConfig(
        language_code="en-US",
        enable_word_time_offsets=True,
        speech_contexts=[speech_v1p1beta1.SpeechContext(phrases=["agent number", "pound key"])],
    )
    audio = speech_v1p1beta1.RecognitionAudio(content=prompt.audio)
    response = client.recognize(config=beta_config, audio=audio, timeout=TIMEOUT_SECONDS)
    assert word_error_rate(prompt.text, response.results[0].alternatives[0].transcript) < 0.3
    operation = client.long_running_recognize(config=beta_config, audio=audio)  # the same job, already done
    result = operation.result(timeout=TIMEOUT_SECONDS)
    assert result.results[0].alternatives[0].transcript == response.results[0].alternatives[0].transcript
    assert result.request_id == response.request_id


@pytest.mark.e2e
def test_curl_style_json_with_separate_channels(server: Server, prompts: dict[str, Any]) -> None:
    """String enums, snake_case names, ``?key=``, the ``/google`` prefix, FusionPBX's string
    ``alternativeLanguageCodes``, and a two-party call: one result per channel."""
    left, right = prompts["agent-alreadyon"], prompts["agent-incorrect"]
    a, b = pcm_of(left.audio), pcm_of(right.audio)
    frames = max(len(a), len(b))
    stereo = np.zeros((frames, 2), dtype=np.int16)
    stereo[: len(a), 0] = a
    stereo[: len(b), 1] = b
    body = {
        "config": {
            "encoding": "LINEAR16",
            "sample_rate_hertz": "8000",
            "audio_channel_count": 2,
            "enable_separate_recognition_per_channel": True,
            "language_code": "en-US",
            "alternativeLanguageCodes": "en-GB,en-IN",
            "enableAutomaticPunctuation": True,
            "model": "latest_long",
            "useEnhanced": True,
        },
        "audio": {"content": base64.b64encode(wav_bytes(stereo)).decode()},
    }
    response = post_json(f"{server.url}/google/v1p1beta1/speech:recognize", body, params={"key": TEST_KEY})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["channelTag"] for r in results] == [1, 2]
    assert word_error_rate(left.text, results[0]["alternatives"][0]["transcript"]) < 0.3
    assert word_error_rate(right.text, results[1]["alternatives"][0]["transcript"]) < 0.3
    assert all(r["languageCode"] == "en-us" for r in results)


@pytest.mark.e2e
def test_silence_has_no_results(server: Server) -> None:
    silence = wav_bytes(np.zeros(3 * 8000, dtype=np.int16))
    response = speech_client(server.url).recognize(
        config=config(), audio=speech_v1.RecognitionAudio(content=silence), timeout=TIMEOUT_SECONDS
    )
    assert len(response.results) == 0
    assert response.total_billed_time.total_seconds() == 3


def test_sdk_errors(server: Server, prompt: Any) -> None:
    client = speech_client(server.url)
    with pytest.raises(google_exceptions.BadRequest) as bad_audio:
        client.recognize(config=config(), audio=speech_v1.RecognitionAudio(content=b"this is not audio at all " * 40))
    assert "not a recognised audio format" in assert_sdk_error(bad_audio.value, 400, "INVALID_ARGUMENT")["message"]

    with pytest.raises(google_exceptions.BadRequest) as wrong_key:
        speech_client(server.url, key="wrong-key").recognize(config=config(), audio=speech_v1.RecognitionAudio(content=prompt.audio))
    assert_sdk_error(wrong_key.value, 400, "INVALID_ARGUMENT")
    assert wrong_key.value.reason == "API_KEY_INVALID"

    with pytest.raises(google_exceptions.Forbidden) as no_key:
        speech_client(server.url, key=None).recognize(config=config(), audio=speech_v1.RecognitionAudio(content=prompt.audio))
    assert_sdk_error(no_key.value, 403, "PERMISSION_DENIED")

    with pytest.raises(google_exceptions.NotFound) as unknown:
        client.transport.operations_client.get_operation("no-such-operation")
    assert_sdk_error(unknown.value, 404, "NOT_FOUND")


def test_http_errors(server: Server, prompt: Any) -> None:
    url = f"{server.url}/v1/speech:recognize"
    content = base64.b64encode(prompt.audio).decode()
    key = {"key": TEST_KEY}
    cases: list[tuple[requests.Response, int, str]] = [
        (requests.post(url, params=key, data=b"{not json", timeout=30), 400, "INVALID_ARGUMENT"),
        (post_json(url, [1, 2], params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"config": {}, "audio": {}}, params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"audio": {"content": "%%% not base64 %%%"}}, params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"config": {"encoding": "WAV"}, "audio": {"content": content}}, params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"config": {"encoding": 42}, "audio": {"content": content}}, params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"config": {"sampleRateHertz": "fast"}, "audio": {"content": content}}, params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"config": {"languageCode": "en US!"}, "audio": {"content": content}}, params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"config": {"encoding": "MULAW"}, "audio": {"content": base64.b64encode(b"\x7f" * 800).decode()}}, params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"audio": {"uri": "gs://bucket/call.wav"}}, params=key), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"audio": {"uri": "https://example.com/call.wav"}}, params=key), 403, "PERMISSION_DENIED"),
        (post_json(url, {"audio": {"content": content}}, params={"key": "wrong"}), 400, "INVALID_ARGUMENT"),
        (post_json(url, {"audio": {"content": content}}, headers={"Authorization": "Bearer wrong"}), 401, "UNAUTHENTICATED"),
        (post_json(url, {"audio": {"content": content}}), 403, "PERMISSION_DENIED"),
        (requests.get(f"{server.url}/google/v1/operations/nope", params=key, timeout=30), 404, "NOT_FOUND"),
    ]
    for response, status, grpc_status in cases:
        assert_google_error(response.status_code, response.json(), status, grpc_status)
    sample_rate = cases[8][0].json()["error"]["message"]
    assert "sample_rate_hertz" in sample_rate
    assert "gs://" in cases[9][0].json()["error"]["message"]


def test_strict_names_other_keys_and_timeouts(strict_server: Server, prompt: Any) -> None:
    content = base64.b64encode(prompt.audio).decode()
    unknown_model = post_json(
        f"{strict_server.url}/v1/speech:recognize", {"config": {"model": "phone_call"}, "audio": {"content": content}}, params={"key": TEST_KEY}
    )
    assert "phone_call" in assert_google_error(unknown_model.status_code, unknown_model.json(), 400, "INVALID_ARGUMENT")["message"]

    timed_out = post_json(f"{strict_server.url}/v1/speech:recognize", {"audio": {"content": content}}, params={"key": TEST_KEY})
    assert_google_error(timed_out.status_code, timed_out.json(), 504, "DEADLINE_EXCEEDED")

    started = post_json(f"{strict_server.url}/v1/speech:longrunningrecognize", {"audio": {"content": content}}, params={"key": TEST_KEY})
    name = started.json()["name"]  # the job the timed-out request left running
    mine = requests.get(f"{strict_server.url}/v1/operations/{name}", params={"key": TEST_KEY}, timeout=30)
    assert mine.status_code == 200 and mine.json()["name"] == name
    theirs = requests.get(f"{strict_server.url}/v1/operations/{name}", params={"key": OTHER_KEY}, timeout=30)
    assert_google_error(theirs.status_code, theirs.json(), 404, "NOT_FOUND")
    listed = requests.get(f"{strict_server.url}/v1/operations", params={"key": OTHER_KEY}, timeout=30).json()
    assert listed == {"operations": []}


# --- the pure translation --------------------------------------------------------------------


def test_parse_accepts_camel_and_snake_case_and_enum_names_and_numbers() -> None:
    audio = base64.urlsafe_b64encode(b"\x00\x01" * 100).decode().rstrip("=")
    by_number = dialect.parse_request(json.dumps({
        "config": {"encoding": 3, "sampleRateHertz": 8000, "languageCode": "es-MX", "speechContexts": [{"phrases": ["Fulano", " "]}]},
        "audio": {"content": audio},
    }).encode())
    by_name = dialect.parse_request(json.dumps({
        "config": {"encoding": "MULAW", "sample_rate_hertz": "8000", "language_code": "es-MX", "speech_contexts": [{"phrases": ["Fulano"]}]},
        "audio": {"content": audio},
    }).encode())
    assert by_number == by_name
    assert by_number.content == b"\x00\x01" * 100
    assert by_number.options == RecognitionOptions(language="es", hotwords=("Fulano",), word_timestamps=True, channel_mode=ChannelMode.MIX)
    assert by_number.hints_for(b"\x7f" * 10) == AudioHints("mulaw", 8000, 1)
    assert by_number.hints_for(b"RIFF....WAVEfmt ") is None  # MULAW inside a WAV is read from its header


def test_alternative_languages_switch_to_detection_only_for_other_languages() -> None:
    def language(alternatives: Any) -> str | None:
        body = {"config": {"languageCode": "en-US", "alternativeLanguageCodes": alternatives}, "audio": {"content": ""}}
        return dialect.parse_request(json.dumps(body).encode()).options.language

    assert language(["en-GB", "en-IN"]) == "en"
    assert language("es-MX") is None  # FusionPBX sends a string
    assert language(["es-MX"]) is None
    with pytest.raises(InvalidRequest):
        language([1])


def test_responses_durations_and_punctuation() -> None:
    words = (Word(" Hello,", 0.0, 0.5, 0.9), Word(" world.", 0.5, 1.25, 0.7))
    transcript = Transcript(segments=(Segment(" Hello, world.", 0.0, 1.25, words),), language="en", duration=2.2)
    render = dialect.RenderOptions(word_time_offsets=True, language_code="en-US")
    document = dialect.recognize_response(transcript, render, "job")
    assert document["totalBilledTime"] == "3s"
    assert document["results"] == [{
        "alternatives": [{
            "transcript": "Hello world",
            "confidence": 0.8,
            "words": [
                {"startTime": "0s", "endTime": "0.500s", "word": "Hello"},
                {"startTime": "0.500s", "endTime": "1.250s", "word": "world"},
            ],
        }],
        "resultEndTime": "1.250s",
        "languageCode": "en-us",
    }]
    empty = dialect.recognize_response(Transcript((), "en", 1.0), render, "job")
    assert set(empty) == {"totalBilledTime", "requestId"}
    assert dialect.duration(61.0004) == "61s" and dialect.duration(0.3) == "0.300s"


def test_failed_operations_carry_the_grpc_code() -> None:
    def failed(code: str) -> Job:
        return Job(id="op", status=JobStatus.FAILED, created_at=1.0, options=RecognitionOptions(), hints=None,
                   dialect="google", attempts=1, finished_at=2.0, error="boom", error_code=code)

    bad_audio = dialect.operation_document(JobProgress(failed(CorruptAudio.code), None, None), "v1p1beta1", 3.0)
    assert bad_audio["done"] is True and bad_audio["error"] == {"code": 3, "message": "boom"}
    assert bad_audio["metadata"]["@type"] == "type.googleapis.com/google.cloud.speech.v1p1beta1.LongRunningRecognizeMetadata"
    engine = dialect.operation_document(JobProgress(failed("engine_error"), None, None), "v1", 3.0)
    assert engine["error"]["code"] == 13


def test_error_rendering() -> None:
    full = render_google_error(QueueFull("the queue is full", 7))
    error = assert_google_error(full.status, json.loads(full.body), 429, "RESOURCE_EXHAUSTED")  # type: ignore[arg-type]
    assert full.headers["Retry-After"] == "7"
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    timeout = render_google_error(WaitTimeout("still running"))
    assert_google_error(timeout.status, json.loads(timeout.body), 504, "DEADLINE_EXCEEDED")  # type: ignore[arg-type]
