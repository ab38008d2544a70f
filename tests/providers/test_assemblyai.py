"""The AssemblyAI dialect: the official SDK (assemblyai==1.8.2) against a real server process
with the real bundled model and real Asterisk recordings (upload, create, poll, exports,
listing, deletion), a real HTTP peer for remote audio and webhooks, plus the pure translation in
``callpipe_asr.providers.assemblyai``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import assemblyai as aai
import pytest
import requests

from asr_testkit import word_error_rate
from callpipe_asr.errors import QueueFull
from callpipe_asr.jobs import Job, JobStatus
from callpipe_asr.providers import assemblyai as dialect
from callpipe_asr.transcript import ChannelMode, RecognitionOptions, Segment, Transcript, Word
from callpipe_asr.web.routes_assemblyai import render_assemblyai_error
from server_testkit import TEST_KEY, Server, launch, stop

OTHER_KEY = "other-key-9876543210"
POLL_SECONDS = 0.2
TIMEOUT_SECONDS = 120
WEBHOOK_HEADER = ("X-Webhook-Secret", "s3cret")



def assert_assemblyai_error(status: int, body: Any, expected_status: int) -> str:
    """The one shape of every AssemblyAI error: ``{"error": "<message>"}``; returns the message."""
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


def assert_response_error(response: requests.Response, expected_status: int) -> str:
    return assert_assemblyai_error(response.status_code, response.json(), expected_status)


Transcribers = Callable[..., aai.Transcriber]


@pytest.fixture
def transcriber() -> Iterator[Transcribers]:
    """``transcriber(url, key=TEST_KEY, **config)``: an SDK transcriber with its own client (fast
    polling); the clients' connections are closed at the end of the test."""
    clients: list[aai.Client] = []

    def make(url: str, key: str = TEST_KEY, **config: Any) -> aai.Transcriber:
        client = aai.Client(settings=aai.Settings(base_url=url, api_key=key, polling_interval=POLL_SECONDS))
        clients.append(client)
        return aai.Transcriber(client=client, config=aai.TranscriptionConfig(**config) if config else None)

    yield make
    for client in clients:
        client.http_client.close()


@dataclass
class Peer:
    """A plain HTTP server on 127.0.0.1: serves ``files`` and records the POSTs it receives."""

    url: str
    files: dict[str, bytes]
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    state = Peer("", {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = state.files.get(self.path)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two keys, strict model names, and remote audio and callbacks allowed to 127.0.0.1."""
    running = launch(
        tmp_path_factory.mktemp("assemblyai-open"),
        {
            "auth": {"api_keys": [TEST_KEY, OTHER_KEY]},
            "providers": {
                "strict_model_names": True,
                "allow_remote_audio": True,
                "allow_callbacks": True,
                "allowed_hosts": ["127.0.0.1"],
                "allow_private_addresses": True,
            },
        },
    )
    yield running
    stop(running)


@pytest.fixture
def global_settings(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The SDK's global settings pointed at ``server``; the default client they make is closed
    afterwards."""
    monkeypatch.setattr(aai.settings, "base_url", server.url)
    monkeypatch.setattr(aai.settings, "api_key", TEST_KEY)
    monkeypatch.setattr(aai.settings, "polling_interval", POLL_SECONDS)
    yield
    aai.Client.get_default().http_client.close()


def upload_files(server: Server) -> list[Path]:
    root = server.data_dir / "assemblyai" / "uploads"
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


# --- the SDK against a real server -----------------------------------------------------------


@pytest.mark.e2e
def test_sdk_uploads_transcribes_and_exports(server: Server, prompt: Any, global_settings: None) -> None:
    """The SDK as its README uses it: global settings, then ``Transcriber().transcribe(path)``."""
    transcript = aai.Transcriber().transcribe(str(prompt.path))
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    assert word_error_rate(prompt.text, transcript.text or "") < 0.3
    assert transcript.audio_duration == 6 and 0 < (transcript.confidence or 0) <= 1
    words = transcript.words or []
    assert len(words) >= 10
    for word in words:
        assert isinstance(word.start, int) and isinstance(word.end, int) and 0 <= word.start <= word.end <= 6000
        assert 0 <= word.confidence <= 1 and word.channel is None
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert transcript.utterances is None
    assert not upload_files(server)  # the upload went into the job; it is not kept beside it

    srt = transcript.export_subtitles_srt()
    assert srt.startswith("1\n00:00:00,") and "-->" in srt
    captions = transcript.export_subtitles_vtt(chars_per_caption=20).split("\n\n")[1:]
    assert len(captions) >= 4 and all(len(c.split("\n", 1)[1].strip()) <= 20 for c in captions if c.strip())
    sentences = transcript.get_sentences()
    assert len(sentences) == 2 and sentences[0].text.endswith(".")
    paragraphs = transcript.get_paragraphs()
    assert " ".join(p.text for p in paragraphs) == " ".join(s.text for s in sentences)


@pytest.mark.e2e
def test_options_reach_the_transcript(server: Server, prompt: Any, transcriber: Transcribers) -> None:
    transcript = transcriber(
        server.url, punctuate=False, format_text=False, speaker_labels=True, word_boost=["agent"], language_code="en_us"
    ).transcribe(prompt.audio)
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    text = transcript.text or ""
    assert text == text.lower() and "." not in text
    assert word_error_rate(prompt.text, text) < 0.3
    assert transcript.utterances and {u.speaker for u in transcript.utterances} == {"A"}
    assert transcript.json_response["word_boost"] == ["agent"] and transcript.json_response["language_code"] == "en_us"


def test_bad_audio_is_a_transcript_with_status_error(server: Server, tmp_path: Path, transcriber: Transcribers) -> None:
    garbage = tmp_path / "not-audio.wav"
    garbage.write_bytes(b"this is not audio at all " * 40)
    client = transcriber(server.url)
    transcript = client.transcribe(str(garbage))
    assert transcript.status == aai.TranscriptStatus.error
    assert "not a recognised audio format" in (transcript.error or "")
    # The record answers polls, listings and deletion like a job.
    polled = requests.get(f"{server.url}/v2/transcript/{transcript.id}", headers={"Authorization": TEST_KEY}, timeout=30).json()
    assert polled["status"] == "error" and polled["error"] == transcript.error
    listed = client.list_transcripts(aai.ListTranscriptParameters(status=aai.TranscriptStatus.error))
    assert transcript.id in [t.id for t in listed.transcripts]
    exported = requests.get(f"{server.url}/v2/transcript/{transcript.id}/srt", headers={"Authorization": TEST_KEY}, timeout=30)
    assert_response_error(exported, 400)
    deleted = requests.delete(f"{server.url}/assemblyai/v2/transcript/{transcript.id}", headers={"Authorization": TEST_KEY}, timeout=30)
    assert deleted.json()["text"] == dialect.DELETED_TEXT
    gone = requests.get(f"{server.url}/v2/transcript/{transcript.id}", headers={"Authorization": TEST_KEY}, timeout=30)
    assert_response_error(gone, 404)


def test_wrong_key_is_the_sdk_error(server: Server, prompt: Any, transcriber: Transcribers) -> None:
    with pytest.raises(aai.types.TranscriptError) as raised:
        transcriber(server.url, key="wrong-key").transcribe(prompt.audio)
    assert dialect.AUTH_MESSAGE in str(raised.value)
    no_key = requests.post(f"{server.url}/v2/upload", data=prompt.audio, timeout=30)
    assert assert_response_error(no_key, 401) == dialect.AUTH_MESSAGE


def test_http_errors(server: Server) -> None:
    url = f"{server.url}/v2/transcript"
    key = {"Authorization": TEST_KEY}
    cases = [
        (requests.post(url, data=b"{not json", headers=key, timeout=30), 400),
        (requests.post(url, json={"language_code": "en"}, headers=key, timeout=30), 400),
        (requests.post(url, json={"audio_url": "x", "punctuate": "yes"}, headers=key, timeout=30), 400),
        (requests.post(url, json={"audio_url": "https://example.com/a.wav"}, headers=key, timeout=30), 403),
        (requests.post(url, json={"audio_url": "x", "webhook_url": "https://example.com/hook"}, headers=key, timeout=30), 403),
        (requests.post(f"{server.url}/v2/upload", data=b"", headers=key, timeout=30), 400),
        (requests.get(f"{url}/no-such-transcript", headers=key, timeout=30), 404),
        (requests.delete(f"{url}/no-such-transcript", headers=key, timeout=30), 404),
        (requests.get(url, params={"limit": "1000"}, headers=key, timeout=30), 400),
        (requests.get(url, params={"status": "done"}, headers=key, timeout=30), 400),
    ]
    for response, status in cases:
        assert_response_error(response, status)
    assert "providers." in cases[3][0].json()["error"]  # names the setting that refuses it


@pytest.mark.e2e
def test_remote_audio_webhooks_listing_and_strict_names(open_server: Server, peer: Peer, prompt: Any, transcriber: Transcribers) -> None:
    peer.files["/prompt.wav"] = prompt.audio
    mine = transcriber(open_server.url)
    created = mine.submit(f"{peer.url}/prompt.wav")
    # The webhook: AssemblyAI's body, with the client's own auth header.
    hooked = requests.post(
        f"{open_server.url}/v2/transcript",
        json={
            "audio_url": f"{peer.url}/prompt.wav",
            "webhook_url": f"{peer.url}/hook",
            "webhook_auth_header_name": WEBHOOK_HEADER[0],
            "webhook_auth_header_value": WEBHOOK_HEADER[1],
        },
        headers={"Authorization": TEST_KEY},
        timeout=30,
    ).json()
    assert hooked["status"] == "queued" and hooked["webhook_auth"] is True and "webhook_auth_header_value" not in hooked
    done = created.wait_for_completion(poll_timeout=TIMEOUT_SECONDS)
    assert done.status == aai.TranscriptStatus.completed and word_error_rate(prompt.text, done.text or "") < 0.3
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not peer.received and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    headers, body = peer.received[0]
    assert json.loads(body) == {"transcript_id": hooked["id"], "status": "completed"}
    assert headers[WEBHOOK_HEADER[0].lower()] == WEBHOOK_HEADER[1]

    missing = mine.transcribe(f"{peer.url}/missing.wav")  # a download that fails is a transcript in error
    assert missing.status == aai.TranscriptStatus.error and "404" in (missing.error or "")

    # Each key sees its own transcripts only.
    own_ids = {t.id for t in mine.list_transcripts().transcripts}
    assert {created.id, hooked["id"], missing.id} <= own_ids
    theirs = transcriber(open_server.url, key=OTHER_KEY)
    assert theirs.list_transcripts().transcripts == []
    foreign = requests.get(f"{open_server.url}/v2/transcript/{created.id}", headers={"Authorization": OTHER_KEY}, timeout=30)
    assert_response_error(foreign, 404)
    foreign_delete = requests.delete(f"{open_server.url}/v2/transcript/{created.id}", headers={"Authorization": OTHER_KEY}, timeout=30)
    assert_response_error(foreign_delete, 404)

    with pytest.raises(aai.types.TranscriptError) as strict:
        transcriber(open_server.url, speech_model=aai.SpeechModel.best).transcribe(prompt.audio)
    assert "best" in str(strict.value)


# --- the pure translation --------------------------------------------------------------------


def _job(transcript: Transcript, **request: Any) -> Job:
    parsed = dialect.parse_transcript_request(json.dumps({"audio_url": "http://x/v2/upload/abc", **request}).encode())
    return Job(id="tx1", status=JobStatus.DONE, created_at=1.0, options=parsed.options, hints=None, dialect="assemblyai",
               attempts=1, finished_at=2.0, transcript=transcript, metadata=parsed.job_metadata())


def test_multichannel_words_and_utterances_carry_their_channel() -> None:
    left = Segment(" Hello there.", 0.0, 1.0, (Word(" Hello", 0.0, 0.4, 0.9), Word(" there.", 0.4, 1.0, 0.7)), channel=0)
    right = Segment(" Hi.", 1.2, 1.6, (Word(" Hi.", 1.2, 1.6, 0.8),), channel=1)
    job = _job(Transcript((left, right), "en", 2.0, channels=2), multichannel=True, speaker_labels=True)
    assert job.options.channel_mode is ChannelMode.SEPARATE
    document = dialect.transcript_document(job)
    assert document["text"] == "Hello there. Hi."
    assert [(w["text"], w["start"], w["end"], w["channel"], w["speaker"]) for w in document["words"]] == [
        ("Hello", 0, 400, "1", "A"), ("there.", 400, 1000, "1", "A"), ("Hi.", 1200, 1600, "2", "B"),
    ]
    assert [(u["channel"], u["text"]) for u in document["utterances"]] == [("1", "Hello there."), ("2", "Hi.")]
    assert document["audio_channels"] == 2 and document["audio_duration"] == 2
    aai.types.TranscriptResponse.parse_obj(document)  # the SDK's own model accepts it


def test_list_pages_newest_first() -> None:
    rows = [dialect.ListedTranscript(id=f"t{i}", created_at=float(i), status="completed", audio_url="u") for i in range(5)]
    first = dialect.list_document(rows, dialect.ListQuery(limit=2), "http://h/v2/transcript")
    assert [t["id"] for t in first["transcripts"]] == ["t4", "t3"]
    assert first["page_details"]["prev_url"] == "http://h/v2/transcript?limit=2&before_id=t3"
    assert first["page_details"]["next_url"] is None
    older = dialect.list_document(rows, dialect.ListQuery(limit=2, before_id="t3"), "http://h/v2/transcript")
    assert [t["id"] for t in older["transcripts"]] == ["t2", "t1"]
    newer = dialect.list_document(rows, dialect.ListQuery(limit=2, after_id="t1"), "http://h/v2/transcript")
    assert [t["id"] for t in newer["transcripts"]] == ["t3", "t2"]
    aai.types.ListTranscriptResponse.parse_obj(first)


def test_webhook_payload_and_error_rendering() -> None:
    job = _job(Transcript((), "en", 1.0), webhook_url="https://example.com/hook",
               webhook_auth_header_name="X-Token", webhook_auth_header_value="v")
    body, headers = dialect.callback_payload(job)
    assert json.loads(body) == {"transcript_id": "tx1", "status": "completed"}
    assert headers == {"Content-Type": "application/json", "X-Token": "v"}
    assert dialect.upload_token("http://host:8000/assemblyai/v2/upload/abcdefghijklmnop1234") == "abcdefghijklmnop1234"
    assert dialect.upload_token("https://cdn.example.com/audio.wav") is None
    full = render_assemblyai_error(QueueFull("the queue is full", 4))
    assert_assemblyai_error(full.status, json.loads(full.body), 429)  # type: ignore[arg-type]
    assert full.headers["Retry-After"] == "4"
    assert RecognitionOptions.from_dict(job.options.to_dict()) == job.options
