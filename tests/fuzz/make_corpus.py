"""Write the committed seed corpus under ``tests/fuzz/corpus/<target>/`` (run once; the files are
committed, so the fuzz tests never depend on this script's tools).

Audio seeds are a fifth of a second of a real Asterisk prompt in every container and codec the
server accepts (PyAV encodes them; raw GSM is cut from Debian's ``.gsm`` prompt): small, so the
fuzzer's mutations reach the headers. Parser seeds are real requests of each dialect, plus the
shapes that once broke a parser (see ``test_fuzz_regressions.py``). Inputs the fuzzer itself found
(``assemblyai/invalid-ipv6-url``, ``audio_probe/seek-refused.webm``) are committed beside these
as it wrote them; this script leaves them alone.

    .venv/bin/python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import av
import numpy as np

CORPUS = Path(__file__).parent / "corpus"
PROMPT = Path("/usr/share/asterisk/sounds/en/agent-alreadyon")
SECONDS = 0.2
RATE_HZ = 8000
GSM_FRAME_BYTES = 33


def prompt_samples() -> np.ndarray:
    with wave.open(str(PROMPT.with_suffix(".wav"))) as recording:
        recording.setpos(RATE_HZ)  # skip the leading silence
        return np.frombuffer(recording.readframes(int(RATE_HZ * SECONDS)), dtype="<i2")


def wav(samples: np.ndarray, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(RATE_HZ)
        writer.writeframes(np.repeat(samples, channels).tobytes())
    return out.getvalue()


def encoded(samples: np.ndarray, container: str, codec: str, rate: int = RATE_HZ) -> bytes:
    """``samples`` (8 kHz s16 mono) encoded by FFmpeg through PyAV."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE_HZ
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for converted in resampler.resample(frame):
            for packet in stream.encode(converted):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return out.getvalue()


def audio_seeds() -> dict[str, bytes]:
    samples = prompt_samples()
    gsm = PROMPT.with_suffix(".gsm").read_bytes()
    return {
        "pcm.wav": wav(samples),
        "stereo.wav": wav(samples[:400], channels=2),
        "nine-channels.wav": wav(samples[:100], channels=9),
        "mulaw.wav": encoded(samples, "wav", "pcm_mulaw"),
        "alaw.wav": encoded(samples, "wav", "pcm_alaw"),
        "raw.gsm": gsm[GSM_FRAME_BYTES * 20 : GSM_FRAME_BYTES * 30],
        "speech.mp3": encoded(samples, "mp3", "libmp3lame", rate=16000),
        "speech.ogg": encoded(samples, "ogg", "libopus", rate=48000),
        "speech.flac": encoded(samples, "flac", "flac"),
        "speech.webm": encoded(samples, "webm", "libopus", rate=48000),
        "speech.m4a": encoded(samples, "ipod", "aac", rate=16000),
        "raw-s16le.pcm": samples[:800].tobytes(),
    }


def google_body(**config: object) -> bytes:
    return json.dumps({"config": {"languageCode": "en-US", **config}, "audio": {"content": "UklGRg=="}}).encode()


PARSER_SEEDS: dict[str, dict[str, bytes]] = {
    "native": {
        "fields": b"language=en-US&model=tiny.en&prompt=voicemail&channels=separate&wait=60",
        "unicode-digits": b"language=%C2%B2&wait=%C2%B2",
    },
    "fusionpbx": {
        "local": b"\nmodel=whisper-1",
        "message": b"format=message\nresponse_format=verbose_json&language=en&temperature=0.2",
    },
    "openai": {
        "verbose": b"model=whisper-1&response_format=verbose_json&timestamp_granularities[]=word&timestamp_granularities[]=segment",
        "translate": b"T&model=whisper-1&prompt=hi&temperature=0.4&stream=true",
        "granularities-list": b"timestamp_granularities=[\"word\",'segment']&language=en",
    },
    "watson": {
        "l16": b"audio/l16; rate=8000; channels=1; endianness=little-endian\nmodel=en-US_Telephony&timestamps=true&word_confidence=true&keywords=hello,world&keywords_threshold=0.5\n\x00\x01\x00\x02",
        "job": b"audio/wav\ncallback_url=https://example.com/cb&events=recognitions.completed&user_token=x&max_alternatives=3\nRIFF",
        "unicode-rate": b"audio/mulaw;rate=\xc2\xb2\n\n\xff\xff",
    },
    "deepgram": {
        "listen": b"model=nova-2&language=en-US&punctuate=true&utterances=true&keywords=snuffleupagus:5&tag=a&extra=k:v&encoding=mulaw&sample_rate=8000&channels=1\n{\"url\": \"https://example.com/a.wav\"}",
        "unicode-rate": b"encoding=linear16&sample_rate=%C2%B2\n{\"url\": 1}",
        "deep-json": b"multichannel=true\n" + b"[" * 3000,
    },
    "google": {
        "recognize": google_body(encoding="MULAW", sampleRateHertz=8000, enableWordTimeOffsets=True, speechContexts=[{"phrases": ["voicemail"]}]),
        "snake-case": google_body(sample_rate_hertz="8000", audio_channel_count=2, enable_separate_recognition_per_channel=True, alternative_language_codes="es-MX,en-GB"),
        "uri": json.dumps({"config": {"encoding": 2}, "audio": {"uri": "https://example.com/a.flac"}}).encode(),
        "long-number": google_body(sampleRateHertz="9" * 5000),
        "unicode-encoding": google_body(encoding="\u00b2"),
        "deep-json": b"{\"config\": " * 1000,
    },
    "azure": {
        "query": b"language=en-US&format=detailed&profanity=masked\neyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        "bad-token": b"language=xx\n...",
    },
    "assemblyai": {
        "transcript": b"limit=10&status=completed&created_on=2024-01-31\n32\n"
        + json.dumps(
            {
                "audio_url": "https://example.com/v2/upload/abc",
                "language_code": "en_us",
                "punctuate": True,
                "speaker_labels": True,
                "word_boost": ["voicemail"],
                "boost_param": "high",
                "webhook_url": "https://example.com/hook",
                "webhook_auth_header_name": "X-Auth",
                "webhook_auth_header_value": "secret",
                "temperature": 0.2,
            }
        ).encode(),
        "unicode-limit": b"limit=%C2%B2\n\xc2\xb2\n{\"audio_url\": \"x\"}",
        "deep-json": b"\n\n" + b"[" * 3000,
    },
}


def write(target: str, name: str, data: bytes) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def main() -> None:
    for name, data in audio_seeds().items():
        write("audio_decode", name, data)
        write("audio_probe", name, b"\0" + data)  # first byte 0: no raw hints
    write("audio_probe", "mulaw-hinted.raw", b"\3" + bytes(range(256)))
    for target, seeds in PARSER_SEEDS.items():
        for name, data in seeds.items():
            write(target, name, data)


if __name__ == "__main__":
    main()
