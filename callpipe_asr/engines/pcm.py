"""What the classic engines (PocketSphinx, Vosk, DeepSpeech) share: 16-bit PCM, chunks, and
segments built from timed words.

Those engines take 16-bit integer samples, fed a chunk at a time (so memory stays flat on a long
voicemail), and report words with times; the segment texts are the words joined, as the
engines write them (bare lowercase, no punctuation: :mod:`..postprocess.casing` adds those).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..transcript import Segment, Word

CHUNK_SECONDS = 0.5
"""Audio handed to an engine per call: small enough for flat memory, large enough to be cheap."""


def to_pcm16(samples: Any) -> Any:
    """float32 in [-1, 1] -> little-endian int16 (clipped, so a hot recording cannot wrap)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2")


def resample(samples: Any, from_rate: int, to_rate: int) -> Any:
    """Linear-interpolation resampling: enough for telephone speech going to an engine whose
    model wants 8 kHz (our audio is 16 kHz and already band-limited by the decoder)."""
    if from_rate == to_rate or len(samples) == 0:
        return samples
    count = max(1, round(len(samples) * to_rate / from_rate))
    positions = np.arange(count, dtype=np.float64) * (from_rate / to_rate)
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def chunks(pcm: Any, rate: int, seconds: float = CHUNK_SECONDS) -> Iterator[bytes]:
    """``pcm`` (int16 array) as byte strings of ``seconds`` each (the last one shorter)."""
    size = max(1, int(rate * seconds))
    for start in range(0, len(pcm), size):
        yield pcm[start:start + size].tobytes()


def segment_of(words: Sequence[Word]) -> Segment | None:
    """One segment spanning ``words`` (an utterance), its text the words joined; None for none."""
    if not words:
        return None
    confidences = [w.confidence for w in words if w.confidence is not None]
    return Segment(
        text=" ".join(w.text for w in words),
        start=words[0].start,
        end=words[-1].end,
        words=tuple(words),
        confidence=round(sum(confidences) / len(confidences), 4) if confidences else None,
    )
