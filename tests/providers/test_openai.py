"""The OpenAI dialect: the official SDK (openai==3.57.0) against a real server process with the
real bundled model and real Asterisk recordings, plus the pure translation in
``callpipe_asr.providers.openai``.

Every request of the shared server uses ``model="whisper-1"`` and the same prompt where it can,
so the store's duplicate suppression answers most of them from one recognition.
"""

from __future__ import annotations

import io
import re
import time
import wave
from typing import Any, Callable, Iterator

import httpx2
import numpy as np
import openai
import pytest
from openai import OpenAI

from asr_testkit import word_error_rate
from callpipe_asr.errors import (
    AudioTooLong, CallpipeError, CorruptAudio, PayloadTooLarge, QueueFull, UnsupportedMediaType, WaitTimeout,
)
from callpipe_asr.providers import openai as dialect
from callpipe_asr.transcript import RecognitionOptions, Segment, Task, Transcript, Word, merge_channel_transcripts
from server_testkit import TEST_KEY, Server

MODEL = "whisper-1"
SDK_TIMEOUT_SECONDS = 120



def assert_openai_error(
    error: openai.APIStatusError | dialect.ErrorReply, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The one shape of every OpenAI error (as the SDK raised it, or as the dialect renders it):
    the envelope, the type that goes with the status, and ``x-should-retry: false`` exactly where
    a retry cannot help (4xx but 408/429)."""
    if isinstance(error, openai.APIStatusError):
        assert error.response.headers["content-type"].startswith("application/json")
        actual_status, headers, body = error.status_code, dict(error.response.headers), error.response.json()
        assert error.body == body["error"]  # what the SDK hands to callers
    else:
        actual_status, headers, body = error.status, {k.lower(): v for k, v in error.headers.items()}, error.body
    assert actual_status == status, body
    assert set(body) == {"error"}
    envelope = body["error"]
    assert set(envelope) == {"message", "type", "param", "code"}
    assert isinstance(envelope["message"], str) and envelope["message"]
    assert isinstance(envelope["code"], str) and envelope["code"]
    expected_type = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    assert envelope["type"] == expected_type
    if code is not None:
        assert envelope["code"] == code, envelope
    if param is not None:
        assert envelope["param"] == param, envelope
    no_retry = 400 <= status < 500 and status not in (408, 429)
    assert headers.get("x-should-retry") == ("false" if no_retry else None)
    return dict(envelope)


SDK = Callable[..., OpenAI]


@pytest.fixture
def sdk() -> Iterator[SDK]:
    """``sdk(server, key=TEST_KEY, prefix="/v1")``: an official client (no retries unless a test
    makes them), closed after the test."""
    made: list[OpenAI] = []

    def make(server: Server, key: str = TEST_KEY, prefix: str = "/v1") -> OpenAI:
        client = OpenAI(base_url=server.url + prefix, api_key=key, max_retries=0, timeout=SDK_TIMEOUT_SECONDS)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def upload(prompt: Any) -> tuple[str, bytes]:
    """A prompt as the SDK's ``(filename, bytes)`` file: nothing left open."""
    return (prompt.path.name, prompt.audio)


def pcm(prompt: Any) -> np.ndarray:
    """A prompt's 8 kHz 16-bit samples."""
    with wave.open(str(prompt.path)) as source:
        return np.frombuffer(source.readframes(source.getnframes()), "<i2")


def wav_bytes(samples: np.ndarray, rate: int = 8000, channels: int = 1) -> bytes:
    """16-bit PCM WAV; ``samples`` is (frames,) or (frames, channels)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
    return buffer.getvalue()


# -- the SDK against the shared server --------------------------------------------------------


@pytest.mark.e2e
def test_every_response_format_of_a_real_prompt(server: Server, prompt: Any, sdk: SDK) -> None:
    client = sdk(server)
    created = client.audio.transcriptions.create(model=MODEL, file=upload(prompt), response_format="json")
    assert word_error_rate(prompt.text, created.text) < 0.3
    assert created.usage is not None and created.usage.type == "duration" and created.usage.seconds == 6

    text = client.audio.transcriptions.create(model=MODEL, file=upload(prompt), response_format="text")
    assert text == created.text + "\n"

    srt = client.audio.transcriptions.create(model=MODEL, file=upload(prompt), response_format="srt")
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt)
    vtt = client.audio.transcriptions.create(model=MODEL, file=upload(prompt), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"00:00:\d\d\.\d{3} --> 00:00:\d\d\.\d{3}\n\S", vtt)
    for subtitles in (srt, vtt):
        cue_text = " ".join(line for line in subtitles.splitlines() if line and "-->" not in line and not line.isdigit())
        assert word_error_rate(prompt.text, cue_text.removeprefix("WEBVTT")) < 0.3

    verbose = client.audio.transcriptions.create(
        model=MODEL, file=upload(prompt), response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert verbose.language == "english" and verbose.text == created.text
    assert verbose.duration == pytest.approx(5.52, abs=0.05)
    assert verbose.words and verbose.segments
    assert all(0 <= w.start <= w.end <= verbose.duration + 0.5 and w.word == w.word.strip() for w in verbose.words)
    assert word_error_rate(prompt.text, " ".join(w.word for w in verbose.words)) < 0.3
    assert all(s.text.startswith(" ") and s.start <= s.end for s in verbose.segments)
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments)))
    assert "".join(s.text for s in verbose.segments).strip() == verbose.text


@pytest.mark.e2e
def test_granularities_in_every_spelling(server: Server, prompt: Any) -> None:
    """The SDK sends ``timestamp_granularities[]`` parts; other clients the bare name or a list."""

    def verbose(granularities: dict[str, str | list[str]]) -> dict[str, Any]:
        response = httpx2.post(
            server.url + "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            data={"model": MODEL, "response_format": "verbose_json", **granularities},
            files={"file": ("call.wav", prompt.audio, "audio/x-wav")},
            timeout=SDK_TIMEOUT_SECONDS,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert {"words", "segments"} <= set(verbose({"timestamp_granularities[]": ["word", "segment"]}))
    only_words = verbose({"timestamp_granularities": "word"})
    assert "words" in only_words and "segments" not in only_words
    assert {"words", "segments"} <= set(verbose({"timestamp_granularities": '["word", "segment"]'}))
    assert "words" in verbose({"timestamp_granularities": "['word']"})
    default = verbose({})
    assert "segments" in default and "words" not in default


@pytest.mark.e2e
def test_translation_of_english_speech_is_its_transcript(server: Server, prompt: Any, sdk: SDK) -> None:
    client = sdk(server)
    with pytest.warns(DeprecationWarning):  # this SDK version marks translations deprecated; they still work
        translated = client.audio.translations.create(model=MODEL, file=upload(prompt))
        verbose = client.audio.translations.create(model=MODEL, file=upload(prompt), response_format="verbose_json")
    assert word_error_rate(prompt.text, translated.text) < 0.3
    assert verbose.language == "english" and verbose.text == translated.text
    assert verbose.segments and all(s.text.startswith(" ") for s in verbose.segments)


@pytest.mark.e2e
def test_streaming_yields_deltas_then_the_whole_text(server: Server, prompt: Any, sdk: SDK) -> None:
    stream = sdk(server).audio.transcriptions.create(model=MODEL, file=upload(prompt), stream=True)
    events = list(stream)
    assert [e.type for e in events][-1] == "transcript.text.done"
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert deltas and len(deltas) == len(events) - 1
    done = events[-1]
    assert "".join(deltas) == done.text
    assert word_error_rate(prompt.text, done.text) < 0.3


@pytest.mark.e2e
def test_the_openai_prefix_serves_the_same_api(server: Server, prompt: Any, sdk: SDK) -> None:
    client = sdk(server, prefix="/openai/v1")
    created = client.audio.transcriptions.create(model=MODEL, file=upload(prompt))
    assert word_error_rate(prompt.text, created.text) < 0.3
    assert MODEL in [m.id for m in client.models.list()]


@pytest.mark.e2e
def test_no_speech_is_no_text(server: Server, sdk: SDK) -> None:
    """Line noise and nothing else: empty text and no segments, never invented words."""
    noise = np.random.default_rng(7).normal(0, 30, 8000 * 3)
    audio = ("silence.wav", wav_bytes(noise))
    client = sdk(server)
    verbose = client.audio.transcriptions.create(model=MODEL, file=audio, response_format="verbose_json")
    assert verbose.text == "" and verbose.segments == []
    assert client.audio.transcriptions.create(model=MODEL, file=audio, response_format="text") == ""
    events = list(client.audio.transcriptions.create(model=MODEL, file=audio, stream=True))
    assert [(e.type, e.text) for e in events] == [("transcript.text.done", "")]


@pytest.mark.e2e
def test_a_two_party_call_marks_each_segment_with_its_channel(server: Server, prompts: dict[str, Any], sdk: SDK) -> None:
    """Caller on the left, callee answering on the right: one dialogue, each turn marked."""
    caller, callee = prompts["vm-nobodyavail"], prompts["tt-weasels"]
    left, right = pcm(caller), pcm(callee)
    answer_at = len(left) + 4000  # half a second after the caller stops
    stereo = np.zeros((answer_at + len(right), 2), dtype=np.int32)
    stereo[: len(left), 0] = left
    stereo[answer_at:, 1] = right
    verbose = sdk(server).audio.transcriptions.create(
        model=MODEL, file=("call.wav", wav_bytes(stereo, channels=2)), response_format="verbose_json"
    )
    assert verbose.segments
    channels = [(segment.model_extra or {})["channel"] for segment in verbose.segments]
    assert channels == sorted(channels) and set(channels) == {0, 1}
    assert all(s.text.startswith(f" [channel {c}] ") for s, c in zip(verbose.segments, channels))
    turns = verbose.text.split("\n")
    assert turns[0].startswith("[channel 0] ") and turns[-1].startswith("[channel 1] ")
    assert word_error_rate(caller.text, turns[0].removeprefix("[channel 0] ")) < 0.3
    assert word_error_rate(callee.text, turns[-1].removeprefix("[channel 1] ")) < 0.3


def test_models_are_listed_with_the_aliases_clients_use(server: Server, sdk: SDK) -> None:
    client = sdk(server)
    names = [m.id for m in client.models.list()]
    assert names[0] == "tiny.en" and "whisper-1" in names and "gpt-4o-transcribe" in names
    model = client.models.retrieve("whisper-1")
    assert (model.id, model.object, model.owned_by) == ("whisper-1", "model", "callpipe-asr")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    assert_openai_error(raised.value, 404, "model_not_found", "model")


def test_bad_audio_and_bad_fields_are_bad_requests(server: Server, prompt: Any, sdk: SDK) -> None:
    client = sdk(server)
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(model=MODEL, file=("voicemail.wav", b"this is not audio at all " * 40))
    error = assert_openai_error(raised.value, 400, "unsupported_audio", "file")
    assert "not a recognised audio format" in error["message"]
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(model=MODEL, file=("empty.wav", b""))
    assert_openai_error(raised.value, 400, "empty_audio", "file")
    bad_fields: list[tuple[dict[str, Any], str]] = [
        ({"response_format": "docx"}, "response_format"),
        ({"temperature": 3}, "temperature"),
        ({"language": "en; drop"}, "language"),
        ({"timestamp_granularities": ["sentence"], "response_format": "verbose_json"}, "timestamp_granularities"),
    ]
    for fields, param in bad_fields:
        with pytest.raises(openai.BadRequestError) as raised:
            client.audio.transcriptions.create(model=MODEL, file=upload(prompt), **fields)
        assert_openai_error(raised.value, 400, "invalid_request", param)
    with pytest.raises(openai.BadRequestError) as raised, pytest.warns(DeprecationWarning):
        client.audio.translations.create(
            model=MODEL, file=upload(prompt), response_format="diarized_json"  # type: ignore[arg-type]
        )
    assert_openai_error(raised.value, 400, "invalid_request", "response_format")
    with pytest.raises(openai.BadRequestError) as raised:
        client.post("/audio/transcriptions", body={"file": "x"}, cast_to=object)
    assert_openai_error(raised.value, 400, "unsupported_media_type")


def test_a_wrong_or_missing_key_is_an_authentication_error(server: Server, prompt: Any, sdk: SDK) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(server, key="sk-wrong").audio.transcriptions.create(model=MODEL, file=upload(prompt))
    assert_openai_error(raised.value, 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(server, key="sk-wrong").models.list()
    assert_openai_error(raised.value, 401, "invalid_api_key")
    response = httpx2.get(server.url + "/v1/models")  # the SDK refuses to run without a key
    missing = openai.AuthenticationError("no key", response=response, body=response.json()["error"])
    assert_openai_error(missing, 401, "unauthenticated")


# -- servers with their own settings ----------------------------------------------------------


@pytest.mark.e2e
def test_strict_names_size_limit_and_a_timeout_retried_onto_the_same_job(
    start_server: Callable[[dict[str, Any]], Server], prompt: Any, sdk: SDK
) -> None:
    running = start_server({
        "providers": {"strict_model_names": True},
        "server": {"sync_wait_seconds": 0.05, "max_upload_bytes": 200_000},
    })
    client = sdk(running, key="anything")  # no keys configured: any key passes
    with pytest.raises(openai.NotFoundError) as raised:
        client.audio.transcriptions.create(model=MODEL, file=upload(prompt))
    assert_openai_error(raised.value, 404, "model_not_found", "model")
    assert [m.id for m in client.models.list()] == ["tiny.en", "base"]  # the default config: configured names only
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve(MODEL)
    assert_openai_error(raised.value, 404, "model_not_found", "model")
    with pytest.raises(openai.APIStatusError) as raised:
        client.audio.transcriptions.create(model="tiny.en", file=("long.wav", prompt.audio * 3))
    assert_openai_error(raised.value, 413, "payload_too_large", "file")

    with pytest.raises(openai.APIError) as streamed:  # the stream began, then the wait ran out
        list(client.audio.transcriptions.create(model="tiny.en", file=upload(prompt), stream=True))
    body = streamed.value.body
    assert body == {"message": streamed.value.message, "type": "server_error", "param": None, "code": "timeout"}
    with pytest.raises(openai.InternalServerError) as timed_out:
        client.audio.transcriptions.create(model="tiny.en", file=upload(prompt))
    assert "it goes on" in assert_openai_error(timed_out.value, 504, "timeout")["message"]
    deadline = time.monotonic() + SDK_TIMEOUT_SECONDS
    while True:  # what the SDK's own retries do: the same request again
        try:
            created = client.audio.transcriptions.create(model="tiny.en", file=upload(prompt))
            break
        except openai.InternalServerError:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert word_error_rate(prompt.text, created.text) < 0.3
    assert running.log().count("recognised by") == 1


@pytest.mark.e2e
def test_a_full_queue_is_a_rate_limit_with_retry_after(
    start_server: Callable[[dict[str, Any]], Server], prompts: dict[str, Any], sdk: SDK
) -> None:
    """One native job fills the queue (it runs for seconds; the SDK asks within milliseconds)."""
    running = start_server({"jobs": {"max_queued": 1, "workers": 1}})
    occupant = prompts["agent-alreadyon"]
    occupied = httpx2.post(running.url + "/api/v1/jobs", files={"file": (occupant.path.name, occupant.audio)}, timeout=30)
    assert occupied.status_code == 202, occupied.text
    with pytest.raises(openai.RateLimitError) as raised:
        sdk(running, key="anything").audio.transcriptions.create(model=MODEL, file=upload(prompts["tt-weasels"]))
    assert_openai_error(raised.value, 429, "rate_limit_exceeded")
    assert int(raised.value.response.headers["retry-after"]) >= 1


# -- the pure translation ---------------------------------------------------------------------


def _segment(text: str, start: float, end: float, words: tuple[str, ...] = ()) -> Segment:
    step = (end - start) / max(1, len(words))
    timed = tuple(Word(f" {w}", start + i * step, start + (i + 1) * step) for i, w in enumerate(words))
    return Segment(text=text, start=start, end=end, words=timed, avg_logprob=-0.2, no_speech_probability=0.01)


def _stereo() -> Transcript:
    caller = Transcript((_segment(" Hello, is Anna there?", 0.0, 1.5, ("Hello,", "is", "Anna", "there?")),), "en", 4.0)
    callee = Transcript((_segment(" Speaking.", 1.8, 2.4, ("Speaking.",)), _segment(" ", 3.0, 3.1)), "en", 4.0)
    return merge_channel_transcripts([caller, callee])


def test_channels_transcribed_apart_are_marked_in_a_field_and_in_the_text() -> None:
    transcript = _stereo()
    fields = {"response_format": ["verbose_json"], "timestamp_granularities[]": ["word", "segment"]}
    request = dialect.parse_request(fields, Task.TRANSCRIBE)
    document = dialect.render(transcript, request)
    assert isinstance(document, dict)
    assert document["text"] == "[channel 0] Hello, is Anna there?\n[channel 1] Speaking."
    assert [(s["channel"], s["text"]) for s in document["segments"]] == [
        (0, " [channel 0] Hello, is Anna there?"), (1, " [channel 1] Speaking."), (1, " ")
    ]
    assert [(w["channel"], w["word"]) for w in document["words"]][-2:] == [(0, "there?"), (1, "Speaking.")]
    diarized = dialect.diarized_document(transcript)
    assert [(s["speaker"], s["text"]) for s in diarized["segments"]] == [("A", "Hello, is Anna there?"), ("B", "Speaking.")]
    mono = Transcript((_segment(" One.", 0, 1), _segment(" Two.", 1, 2)), "en", 2.0)
    assert "channel" not in dialect.verbose_segments(mono)[0]


def test_stream_deltas_join_to_the_text() -> None:
    mono = Transcript((_segment(" One.", 0, 1), _segment("", 1, 1.2), _segment(" Two.", 1.2, 2)), "en", 2.0)
    for transcript in (mono, _stereo()):
        events = dialect.stream_events(transcript)
        assert "".join(e["delta"] for e in events[:-1]) == transcript.text == events[-1]["text"]
    assert dialect.sse_data({"type": "x", "delta": "é"}) == 'data: {"type": "x", "delta": "é"}\n\n'.encode()


def test_fields_become_recognition_options() -> None:
    request = dialect.parse_request(
        {"model": ["gpt-4o-transcribe"], "language": ["en-US"], "prompt": ["Anna, Callpipe"], "temperature": ["0.2"],
         "stream": ["true"], "response_format": ["TEXT"]},
        Task.TRANSCRIBE,
    )
    expected = RecognitionOptions(model="gpt-4o-transcribe", language="en", prompt="Anna, Callpipe", temperature=0.2,
                                  word_timestamps=False, segment_timestamps=False)
    assert request.options == expected
    # segment times only where the response shows them: json and text are decoded text only
    shows_times = {fmt: dialect.parse_request({"response_format": [fmt]}, Task.TRANSCRIBE).options.segment_timestamps
                   for fmt in dialect.TRANSCRIPTION_FORMATS}
    assert shows_times == {"json": False, "text": False, "srt": True, "vtt": True, "verbose_json": True,
                           "diarized_json": True}
    # words are aligned only when the response shows them (the alignment pass costs ~10 % of the time)
    words = dialect.parse_request({"response_format": ["verbose_json"], "timestamp_granularities[]": ["word"]},
                                  Task.TRANSCRIBE)
    segments = dialect.parse_request({"response_format": ["verbose_json"], "timestamp_granularities[]": ["segment"]},
                                     Task.TRANSCRIBE)
    assert words.options.word_timestamps and not segments.options.word_timestamps
    assert (request.response_format, request.stream) == ("text", True)
    translation = dialect.parse_request({"stream": ["true"]}, Task.TRANSLATE)
    assert translation.options.task is Task.TRANSLATE and not translation.stream and translation.response_format == "json"
    assert dialect.parse_granularities({"timestamp_granularities": ["word,segment"]}) == {"word", "segment"}


def test_errors_map_to_openai_statuses_and_retry_hints() -> None:
    cases: list[tuple[CallpipeError, int, str]] = [
        (UnsupportedMediaType("not multipart"), 400, "unsupported_media_type"),
        (AudioTooLong("too long"), 400, "audio_too_long"),
        (QueueFull("full", 30), 429, "rate_limit_exceeded"),
        (WaitTimeout("still running"), 504, "timeout"),
        (PayloadTooLarge("over the limit"), 413, "payload_too_large"),
    ]
    for error, status, code in cases:
        assert_openai_error(dialect.render_error(error), status, code)
    assert assert_openai_error(dialect.render_error(CorruptAudio("damaged")), 400, "corrupt_audio", "file")
