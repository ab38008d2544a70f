"""The Azure Speech short-audio dialect: curl, as Azure's own REST samples call it (issueToken,
then recognize with the token; simple and detailed results; chunked upload), against a real
server process with the real bundled model and real Asterisk recordings, plus the pure
translation in ``callpipe_asr.providers.azure``.
"""

from __future__ import annotations

import io
import json
import subprocess
import wave
from typing import Any

import numpy as np
import pytest

from asr_testkit import word_error_rate
from callpipe_asr.errors import AuthenticationFailed, InvalidRequest, JobFailed, QueueFull
from callpipe_asr.providers import azure as dialect
from callpipe_asr.transcript import Segment, Transcript, Word
from callpipe_asr.web.routes_azure import render_azure_error
from server_testkit import TEST_KEY, Server

TIMEOUT_SECONDS = 120
WAV_TYPE = "Content-Type: audio/wav; codecs=audio/pcm; samplerate=16000"



def assert_azure_error(status: int, body: Any, expected_status: int) -> str:
    """The one shape of every Azure error: the gateway's ``{"error": {"code", "message"}}`` with
    the status as its code; returns the message."""
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == str(expected_status)
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


def curl(*args: str, data: bytes | None = None) -> tuple[int, bytes]:
    """``curl -s`` with the body on stdin when given; returns (status, body)."""
    command = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args]
    if data is not None:
        command += ["--data-binary", "@-"]
    done = subprocess.run(command, input=data, capture_output=True, check=True, timeout=TIMEOUT_SECONDS)
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def curl_json(*args: str, data: bytes | None = None) -> tuple[int, Any]:
    status, body = curl(*args, data=data)
    return status, json.loads(body)


def recognize_url(server: Server, query: str, prefix: str = "", mode: str = "conversation") -> str:
    return f"{server.url}{prefix}/speech/recognition/{mode}/cognitiveservices/v1?{query}"


def wav_seconds(audio: bytes) -> float:
    with wave.open(io.BytesIO(audio)) as reader:
        return reader.getnframes() / reader.getframerate()


def silent_wav(seconds: float, rate_hz: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate_hz)
        writer.writeframes(np.zeros(int(seconds * rate_hz), dtype="<i2").tobytes())
    return buffer.getvalue()


def issue_token(server: Server, key: str = TEST_KEY, prefix: str = "") -> tuple[int, bytes]:
    return curl(
        "-X", "POST", f"{server.url}{prefix}/sts/v1.0/issueToken",
        "-H", f"Ocp-Apim-Subscription-Key: {key}",
        "-H", "Content-type: application/x-www-form-urlencoded",
        "-H", "Content-Length: 0",
    )


# --- curl against a real server --------------------------------------------------------------


@pytest.mark.e2e
def test_token_then_simple_recognition(server: Server, prompt: Any) -> None:
    status, token = issue_token(server)
    assert status == 200 and token.count(b".") == 2
    status, result = curl_json(
        "-X", "POST", recognize_url(server, "language=en-US&format=simple"),
        "-H", f"Authorization: Bearer {token.decode()}",
        "-H", WAV_TYPE,
        "-H", "Accept: application/json;text/xml",
        data=prompt.audio,
    )
    assert status == 200, result
    assert set(result) == {"RecognitionStatus", "DisplayText", "Offset", "Duration"}
    assert result["RecognitionStatus"] == "Success"
    assert word_error_rate(prompt.text, result["DisplayText"]) < 0.3
    assert isinstance(result["Offset"], int) and isinstance(result["Duration"], int)
    assert 10_000_000 < result["Offset"] + result["Duration"] <= wav_seconds(prompt.audio) * 10_000_000 + 5_000_000


@pytest.mark.e2e
def test_detailed_recognition_with_a_key_and_a_chunked_upload(server: Server, prompt: Any) -> None:
    status, result = curl_json(
        "-X", "POST", recognize_url(server, "language=en-US&format=detailed&profanity=raw", prefix="/azure", mode="dictation"),
        "-H", f"Ocp-Apim-Subscription-Key: {TEST_KEY}",
        "-H", "Content-Type: audio/wav",
        "-H", "Transfer-Encoding: chunked",
        "-H", "Expect: 100-continue",
        data=prompt.audio,
    )
    assert status == 200, result
    assert result["RecognitionStatus"] == "Success"
    best = result["NBest"][0]
    assert set(best) == {"Confidence", "Lexical", "ITN", "MaskedITN", "Display"}
    assert 0 < best["Confidence"] <= 1
    assert best["Display"] == result["DisplayText"]
    assert best["Lexical"] == best["Lexical"].lower() and "." not in best["Lexical"]
    assert word_error_rate(prompt.text, best["Lexical"]) < 0.3


@pytest.mark.e2e
def test_silence_is_a_native_no_speech_status(server: Server) -> None:
    status, result = curl_json(
        "-X", "POST", recognize_url(server, "language=en-US"),
        "-H", f"Ocp-Apim-Subscription-Key: {TEST_KEY}", "-H", WAV_TYPE,
        data=silent_wav(3.0),
    )
    assert status == 200
    assert result["RecognitionStatus"] in ("InitialSilenceTimeout", "NoMatch")
    assert "DisplayText" not in result


def test_errors(server: Server, prompt: Any) -> None:
    key = ("-H", f"Ocp-Apim-Subscription-Key: {TEST_KEY}")
    url = recognize_url(server, "language=en-US")
    _, token = issue_token(server, prefix="/azure")
    forged = token[:-2].decode() + ("AA" if not token.endswith(b"AA") else "BB")
    cases = [
        (curl_json("-X", "POST", url, "-H", "Ocp-Apim-Subscription-Key: wrong", data=prompt.audio), 401),
        (curl_json("-X", "POST", url, data=prompt.audio), 403),
        (curl_json("-X", "POST", url, "-H", f"Authorization: Bearer {forged}", data=prompt.audio), 401),
        (curl_json("-X", "POST", url, "-H", "Authorization: Bearer not-a-token", data=prompt.audio), 401),
        (curl_json("-X", "POST", recognize_url(server, "format=simple"), *key, data=prompt.audio), 400),
        (curl_json("-X", "POST", recognize_url(server, "language=en-US&format=verbose"), *key, data=prompt.audio), 400),
        (curl_json("-X", "POST", recognize_url(server, "language=en-US&profanity=bleep"), *key, data=prompt.audio), 400),
        (curl_json("-X", "POST", url, *key, "-H", WAV_TYPE, data=b"this is not audio at all " * 40), 400),
        (curl_json("-X", "POST", url, *key, data=b""), 400),
    ]
    for (status, body), expected in cases:
        assert_azure_error(status, body, expected)
    status, body = issue_token(server, key="wrong")
    assert_azure_error(status, json.loads(body), 401)
    assert "language" in cases[4][0][1]["error"]["message"]


# --- the pure translation --------------------------------------------------------------------


def test_tokens_expire_and_name_their_owner() -> None:
    secret = b"s" * 32
    token = dialect.issue_token(secret, "owner-1", now=1000.0)
    assert dialect.token_owner(secret, token, now=1000.0 + dialect.TOKEN_LIFETIME_SECONDS - 1) == "owner-1"
    with pytest.raises(AuthenticationFailed, match="expired"):
        dialect.token_owner(secret, token, now=1000.0 + dialect.TOKEN_LIFETIME_SECONDS)
    with pytest.raises(AuthenticationFailed):
        dialect.token_owner(b"another secret", token, now=1000.0)
    assert dialect.token_owner(secret, dialect.issue_token(secret, None, 5.0), 6.0) is None


def test_query_parsing() -> None:
    parsed = dialect.parse_query({"language": "es-MX", "format": "Detailed"})
    assert parsed.options.language == "es" and parsed.result_format is dialect.ResultFormat.DETAILED
    with pytest.raises(InvalidRequest):
        dialect.parse_query({"language": "en US"})


def test_results_in_ticks_and_no_match() -> None:
    words = (Word(" Remind", 0.18, 0.6, 0.9), Word(" me.", 0.6, 3.39, 0.8))
    transcript = Transcript(segments=(Segment(" Remind me.", 0.0, 3.4, words),), language="en", duration=4.0)
    simple = dialect.recognition_document(transcript, dialect.ResultFormat.SIMPLE)
    assert simple == {"RecognitionStatus": "Success", "DisplayText": "Remind me.", "Offset": 1_800_000, "Duration": 32_100_000}
    detailed = dialect.recognition_document(transcript, dialect.ResultFormat.DETAILED)
    assert detailed["NBest"] == [{"Confidence": 0.85, "Lexical": "remind me", "ITN": "remind me", "MaskedITN": "remind me", "Display": "Remind me."}]
    no_words = Transcript(segments=(Segment(" ", 1.0, 2.0),), language="en", duration=4.0)
    assert dialect.recognition_document(no_words, dialect.ResultFormat.SIMPLE) == {
        "RecognitionStatus": "NoMatch", "Offset": 10_000_000, "Duration": 10_000_000,
    }


def test_error_rendering() -> None:
    full = render_azure_error(QueueFull("the queue is full", 9))
    assert_azure_error(full.status, json.loads(full.body), 429)  # type: ignore[arg-type]
    assert full.headers["Retry-After"] == "9"
    failed = render_azure_error(JobFailed("the engine failed"))
    assert failed.status == 200
    assert json.loads(failed.body)["RecognitionStatus"] == "Error"  # type: ignore[arg-type]
