"""The recognition pipeline's own decisions, with an engine that only records what it was asked:
text-only requests reach the engine as such, except where channels are merged by time."""

from __future__ import annotations

import contextlib
import io
import wave
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from callpipe_asr.pipeline import Recognizer
from callpipe_asr.settings import Settings
from callpipe_asr.transcript import ChannelMode, RecognitionOptions, Segment, Transcript

RATE_HZ = 8_000


@dataclass
class RecordingEngine:
    """Answers every channel with one segment and keeps the options it was given."""

    name: str = "recording"
    asked: list[RecognitionOptions] = field(default_factory=list)

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        self.asked.append(options)
        seconds = len(samples) / 16_000
        return Transcript((Segment(" Hello there.", 0.5, seconds - 0.5),), "en", seconds)


@dataclass
class OneEngine:
    engine: RecordingEngine

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[RecordingEngine]:
        yield self.engine


def wav_bytes(channels: list[np.ndarray]) -> bytes:
    frames = np.stack(channels, axis=1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(len(channels))
        out.setsampwidth(2)
        out.setframerate(RATE_HZ)
        out.writeframes((frames * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def tone(hz: float, seconds: float = 3.0) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE_HZ)) / RATE_HZ)


TEXT_ONLY = RecognitionOptions(word_timestamps=False, segment_timestamps=False)


def test_a_text_only_request_reaches_the_engine_as_one(make_settings: Callable[..., Settings]) -> None:
    engine = RecordingEngine()
    Recognizer(make_settings(), OneEngine(engine)).recognize(wav_bytes([tone(440)]), None, TEXT_ONLY)
    [asked] = engine.asked
    assert (asked.word_timestamps, asked.segment_timestamps) == (False, False)


def test_channels_transcribed_apart_keep_segment_times_to_be_merged_by(make_settings: Callable[..., Settings]) -> None:
    """Two parties' segments are interleaved by their start times: those must be real ones."""
    engine = RecordingEngine()
    options = RecognitionOptions(word_timestamps=False, segment_timestamps=False, channel_mode=ChannelMode.SEPARATE)
    transcript = Recognizer(make_settings(), OneEngine(engine)).recognize(
        wav_bytes([tone(440), tone(1000)]), None, options
    )
    assert len(engine.asked) == 2 and all(o.segment_timestamps and not o.word_timestamps for o in engine.asked)
    assert transcript.channels == 2
