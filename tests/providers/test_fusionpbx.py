"""The FusionPBX dialect: FusionPBX's exact requests replayed with the real ``curl`` binary
(the libcurl its PHP uses) against a real server process with the real model and real Asterisk
recordings, plus the pure translation in ``callpipe_asr.providers.fusionpbx``.

What FusionPBX sends is in ``docs/fusionpbx.md`` §1A (5.3+ ``local`` and ``openai`` engines),
§1B (5.1-5.2 ``custom``: enqueue, then poll) and §1C (<= 5.0 Lua ``custom``).
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pytest

from asr_testkit import word_error_rate
from callpipe_asr.errors import InvalidRequest, NotFound, WaitTimeout
from callpipe_asr.jobs import Job, JobStatus
from callpipe_asr.providers import fusionpbx
from callpipe_asr.providers.fusionpbx import ReplyFormat
from callpipe_asr.transcript import RecognitionOptions, Segment, Transcript
from server_testkit import TEST_KEY, Server

CURL_TIMEOUT_SECONDS = 180
EXPECT_THRESHOLD_BYTES = 1024 * 1024
"""libcurl (7.88 here) adds ``Expect: 100-continue`` by itself above 1 MiB of POST body."""
POLL_INTERVAL_SECONDS = 0.2



@dataclass(frozen=True)
class CurlReply:
    status: int
    body: bytes
    trace: str
    """curl's ``-v`` output: ``> `` lines are what it sent, ``< `` lines what it received."""

    def json(self) -> Any:
        return json.loads(self.body)


def curl(url: str, *args: str) -> CurlReply:
    """Run the real curl as FusionPBX's PHP and shell code do; the status comes from ``-w``."""
    marker = "\nHTTP-STATUS:"
    done = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", str(CURL_TIMEOUT_SECONDS), "-w", marker + "%{http_code}", *args, url],
        capture_output=True, timeout=CURL_TIMEOUT_SECONDS + 10, check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    body, _, status = done.stdout.rpartition(marker.encode())
    return CurlReply(int(status), body, done.stderr.decode(errors="replace"))


def php_local_request(audio: Path, key: str, response_format: str = "text") -> list[str]:
    """``transcribe_local.php`` l.441-496: forced ``Content-Type``, ``Bearer`` (maybe empty), the
    file copied to ``/dev/shm`` as ``msg_<uuid>.segment.1.wav`` with no MIME type of its own."""
    return [
        "-X", "POST",
        "-H", f"Authorization: Bearer {key}",
        "-H", "Content-Type: multipart/form-data",
        "-H", "Expect: 100-continue",
        "-F", f"file=@{audio};filename=msg_{uuid.uuid4()}.segment.1.wav",
        "-F", "model=whisper-1",
        "-F", f"response_format={response_format}",
    ]


def assert_fusionpbx_failure(reply: CurlReply, status: int, shape: Literal["empty", "message", "poll"] = "empty") -> None:
    """The one shape of every FusionPBX failure: nothing FusionPBX would mail as a transcript.

    ``empty``: no body at all (``/transcribe``, ``/enqueue``); ``message``: the Lua provider's
    JSON with an empty message; ``poll``: ``/j/<id>``'s failed job, which ends FusionPBX's loop.
    """
    assert reply.status == status, reply.body
    if shape == "empty":
        assert reply.body == b""
    elif shape == "message":
        assert reply.json() == {"message": ""}
    else:
        assert reply.json() == {"status": "failed", "result": None}


def voicemail_wav(prompt: Any, rate_hz: int = 16_000, seconds: float = 34.0) -> bytes:
    """A G.722-rate voicemail: the prompt, then the caller's silence until hang-up. Over 1 MiB,
    so libcurl sends ``Expect: 100-continue`` by itself, as FusionPBX's does for long messages."""
    with wave.open(str(prompt.path)) as source:
        rate, frames = source.getframerate(), np.frombuffer(source.readframes(source.getnframes()), "<i2")
    positions = np.arange(int(len(frames) * rate_hz / rate)) * rate / rate_hz
    speech = np.interp(positions, np.arange(len(frames)), frames.astype(np.float64))
    samples = np.zeros(int(seconds * rate_hz))
    samples[: len(speech)] = speech
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def voicemail(prompt: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fusionpbx") / "msg_voicemail.wav"
    path.write_bytes(voicemail_wav(prompt))
    assert path.stat().st_size > EXPECT_THRESHOLD_BYTES
    return path


# -- 5.3+ engine=local ------------------------------------------------------------------------


@pytest.mark.e2e
def test_local_engine_gets_the_plain_transcript(server: Server, voicemail: Path, prompt: Any) -> None:
    reply = curl(server.url + "/transcribe", *php_local_request(voicemail, TEST_KEY))
    assert reply.status == 200, reply.trace
    assert "> Content-Type: multipart/form-data; boundary=" in reply.trace  # libcurl completes the forced header
    assert "> Expect: 100-continue" in reply.trace and "< HTTP/1.1 100 Continue" in reply.trace
    assert "< Content-Type: text/plain; charset=utf-8" in reply.trace
    text = reply.body.decode("utf-8")
    assert text == text.strip()  # FusionPBX trims it, the Lua provider does not
    assert word_error_rate(prompt.text, text) < 0.3


@pytest.mark.e2e
def test_local_engine_per_channel_json_has_segments(server: Server, voicemail: Path, prompt: Any) -> None:
    """What ``transcribe_local.php`` l.359-381 does with ``json``: concatenate each channel's
    ``segments[].text``, sort by ``start``."""
    reply = curl(server.url + "/transcribe", *php_local_request(voicemail, TEST_KEY, "json"))
    assert reply.status == 200, reply.trace
    document = reply.json()
    segments = sorted(document["segments"], key=lambda s: s["start"])
    assert segments and all(s["text"].startswith(" ") and 0 <= s["start"] <= s["end"] for s in segments)
    assert word_error_rate(prompt.text, "".join(s["text"] for s in segments).strip()) < 0.3
    assert word_error_rate(prompt.text, document["text"]) < 0.3


# -- 5.3+ engine=openai -----------------------------------------------------------------------


@pytest.mark.e2e
def test_openai_engine_joins_verbose_json_segments(server: Server, prompt: Any) -> None:
    """``transcribe_openai.php`` sends ``verbose_json`` even for mono and concatenates
    ``segments[].text`` with no separator (l.372), then trims."""
    args = php_local_request(prompt.path, TEST_KEY, "verbose_json")
    reply = curl(server.url + "/v1/audio/transcriptions", *args)
    assert reply.status == 200, reply.body
    document = reply.json()
    assert "error" not in document
    transcript = "".join(segment["text"] for segment in document["segments"]).strip()
    assert word_error_rate(prompt.text, transcript) < 0.3
    assert transcript == document["text"]


# -- <= 5.0 Lua custom and 5.1-5.2 custom ------------------------------------------------------


@pytest.mark.e2e
def test_lua_custom_provider_gets_text_or_a_message(server: Server, prompts: dict[str, Any]) -> None:
    """``record_message.lua`` l.347-379: ``curl -X POST <server> -H 'Authorization: Bearer <key>'
    -F file=@<path>``; with ``json_enabled`` it decodes ``{"message": ...}``."""
    prompt = prompts["vm-nobodyavail"]
    lua = ["-X", "POST", "-H", f"Authorization: Bearer {TEST_KEY}", "-F", f"file=@{prompt.path}"]
    message = curl(server.url + "/transcribe?format=message", *lua)
    assert message.status == 200, message.body
    assert word_error_rate(prompt.text, message.json()["message"]) < 0.3
    plain = curl(server.url + "/transcribe", *lua)
    assert plain.status == 200 and plain.body.decode() == message.json()["message"]


@pytest.mark.e2e
def test_enqueue_then_poll_until_finished(server: Server, prompts: dict[str, Any]) -> None:
    """``functions/transcribe.php`` 5.2.0 l.244-318: enqueue, sleep, poll ``/j/<id>`` until
    ``finished`` (then ``result`` is the text) or ``failed``."""
    prompt = prompts["tt-weasels"]
    auth = ["-H", f"Authorization: Bearer {TEST_KEY}"]
    enqueued = curl(server.url + "/enqueue", "-sX", "POST", *auth, "-F", f"file=@{prompt.path}")
    assert enqueued.status == 201, enqueued.body
    job_id = enqueued.json()["id"]
    seen = []
    deadline = time.monotonic() + CURL_TIMEOUT_SECONDS
    while True:
        polled = curl(f"{server.url}/j/{job_id}", *auth)
        assert polled.status == 200
        document = polled.json()
        seen.append(document["status"])
        if document["status"] in ("finished", "failed"):
            break
        assert document == {"status": document["status"], "result": None}
        assert time.monotonic() < deadline
        time.sleep(POLL_INTERVAL_SECONDS)
    assert set(seen) <= {"queued", "started", "finished"} and seen[-1] == "finished"
    assert word_error_rate(prompt.text, document["result"]) < 0.3


# -- failures ---------------------------------------------------------------------------------


def test_an_unknown_job_is_failed_not_missing(server: Server) -> None:
    auth = ["-H", f"Authorization: Bearer {TEST_KEY}"]
    assert_fusionpbx_failure(curl(server.url + "/j/no-such-job", *auth), 200, "poll")


def test_failures_have_nothing_to_mail(server: Server, prompt: Any, tmp_path: Path) -> None:
    junk = tmp_path / "msg_junk.wav"
    junk.write_bytes(b"this is not audio at all " * 40)
    empty = tmp_path / "msg_empty.wav"
    empty.write_bytes(b"")
    transcribe = server.url + "/transcribe"
    assert_fusionpbx_failure(curl(transcribe, *php_local_request(junk, TEST_KEY)), 415)
    assert_fusionpbx_failure(curl(transcribe, *php_local_request(empty, TEST_KEY)), 400)
    assert_fusionpbx_failure(curl(transcribe, *php_local_request(prompt.path, "wrong-key")), 401)
    assert_fusionpbx_failure(curl(transcribe, *php_local_request(prompt.path, "")), 401)
    assert_fusionpbx_failure(curl(transcribe, *php_local_request(prompt.path, TEST_KEY, "srt")), 400)
    assert_fusionpbx_failure(curl(transcribe, "-H", f"Authorization: Bearer {TEST_KEY}", "-d", "file=x"), 415)
    lua = ["-X", "POST", "-H", f"Authorization: Bearer {TEST_KEY}"]
    assert_fusionpbx_failure(curl(transcribe + "?format=message", *lua, "-F", f"file=@{junk}"), 415, "message")
    assert_fusionpbx_failure(curl(transcribe + "?format=xml", *lua, "-F", f"file=@{junk}"), 400)
    assert_fusionpbx_failure(curl(server.url + "/enqueue", *lua, "-F", f"file=@{junk}"), 415)
    assert_fusionpbx_failure(
        curl(server.url + "/enqueue", "-X", "POST", "-H", "Authorization: Bearer wrong-key", "-F", f"file=@{prompt.path}"), 401
    )
    enqueued = curl(server.url + "/enqueue", *lua, "-F", f"file=@{prompt.path}")
    assert enqueued.status == 201
    wrong_key_poll = curl(f"{server.url}/j/{enqueued.json()['id']}", "-H", "Authorization: Bearer wrong-key")
    assert_fusionpbx_failure(wrong_key_poll, 401, "poll")


@pytest.mark.e2e
def test_a_full_queue_makes_fusionpbx_wait_not_fail(
    start_server: Callable[[dict[str, Any]], Server], prompts: dict[str, Any], prompt: Any
) -> None:
    """FusionPBX cannot handle a refusal, so its request joins the queue past ``max_queued`` and
    waits. No keys configured, so FusionPBX's default ``Authorization: Bearer `` (empty) passes."""
    running = start_server({"jobs": {"max_queued": 1, "workers": 1}})
    native = running.url + "/api/v1/jobs"
    occupied = curl(native, "-F", f"file=@{prompts['agent-alreadyon'].path}")
    assert occupied.status == 202, occupied.body
    refused = curl(native, "-F", f"file=@{prompts['vm-nobodyavail'].path}")
    assert refused.status == 429, refused.body  # the queue is full for everyone else
    reply = curl(running.url + "/transcribe", *php_local_request(prompts["tt-weasels"].path, ""))
    assert reply.status == 200, reply.body
    assert word_error_rate(prompts["tt-weasels"].text, reply.body.decode()) < 0.3


# -- the pure translation ---------------------------------------------------------------------


def _job(status: JobStatus, text: str | None = None) -> Job:
    transcript = Transcript((Segment(f" {text}", 0.0, 1.0),), "en", 1.0) if text is not None else None
    return Job(id="j1", status=status, created_at=0.0, options=RecognitionOptions(), hints=None,
               dialect="fusionpbx", attempts=1, transcript=transcript)


def test_job_states_in_fusionpbx_words() -> None:
    assert fusionpbx.poll_document(_job(JobStatus.QUEUED)) == {"status": "queued", "result": None}
    assert fusionpbx.poll_document(_job(JobStatus.RUNNING)) == {"status": "started", "result": None}
    assert fusionpbx.poll_document(_job(JobStatus.DONE, "Call me back.")) == {"status": "finished", "result": "Call me back."}
    assert fusionpbx.poll_document(_job(JobStatus.FAILED)) == {"status": "failed", "result": None}
    assert fusionpbx.poll_failure(NotFound("gone")) == (200, {"status": "failed", "result": None})
    assert fusionpbx.poll_failure(WaitTimeout("slow"))[1]["status"] == "failed"


def test_reply_format_precedence() -> None:
    assert fusionpbx.reply_format(None, None, False) is ReplyFormat.TEXT
    assert fusionpbx.reply_format(None, None, True) is ReplyFormat.MESSAGE
    assert fusionpbx.reply_format(None, "text", True) is ReplyFormat.TEXT  # 5.3+ still gets text
    assert fusionpbx.reply_format("message", "json", False) is ReplyFormat.MESSAGE
    assert fusionpbx.reply_format(None, "JSON", False) is ReplyFormat.JSON
    for query, field in (("xml", None), (None, "srt")):
        with pytest.raises(InvalidRequest):
            fusionpbx.reply_format(query, field, False)


def test_no_speech_is_an_empty_transcript_in_every_shape() -> None:
    silent = Transcript((), "en", 3.0)
    assert fusionpbx.render_transcript(silent, ReplyFormat.TEXT) == ""
    assert fusionpbx.render_transcript(silent, ReplyFormat.JSON) == {"text": "", "segments": []}
    assert fusionpbx.render_transcript(silent, ReplyFormat.MESSAGE) == {"message": ""}
    verbose = fusionpbx.render_transcript(silent, ReplyFormat.VERBOSE_JSON)
    assert isinstance(verbose, dict) and verbose["segments"] == [] and verbose["text"] == ""


def test_only_replies_with_segments_ask_for_their_times() -> None:
    """Text and messages (what FusionPBX mails) are decoded text only; JSON shapes keep segment
    times (FusionPBX sorts a per-channel reply's segments by start). Never words."""
    for fmt in ReplyFormat:
        options = fusionpbx.options_from_fields({"model": ["whisper-1"]}, fmt)
        assert not options.word_timestamps
        assert options.segment_timestamps is (fmt in (ReplyFormat.JSON, ReplyFormat.VERBOSE_JSON)), fmt
