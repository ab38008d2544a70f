"""A STAND-IN for the ``deepspeech`` / ``stt`` packages, for the adapter's tests only.

Neither package has a wheel for this Python (3.11) and no DeepSpeech model is on PyPI, so real
inference cannot run here. This module implements the documented API the adapter uses
(``Model(path)``, ``sampleRate``, ``enableExternalScorer``, ``setScorerAlphaBeta``,
``setBeamWidth``, ``sttWithMetadata`` returning ``Metadata.transcripts[].tokens[]`` with
``text``, ``timestep`` and ``start_time``) with a transparent "recogniser": every burst of
sound in the audio is the next word of :data:`WORDS`, its characters timed from the burst's
start. That lets the tests check what the adapter does (windows, time offsets, resampling,
word building, scorer and beam settings, errors) against known answers. It recognises nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

WORDS = ("please", "leave", "your", "message", "after", "the", "tone", "goodbye")
MODEL_MAGIC = b"STAND-IN DEEPSPEECH MODEL"
"""A model file the stand-in accepts starts with this; anything else fails as the real one does."""
FRAME_SECONDS = 0.02
BURST_SECONDS = 0.28
"""How long the tests' tone bursts (words) last, less one frame."""
THRESHOLD = 2000
"""Mean absolute int16 amplitude of a 20 ms frame above which it is sound."""


@dataclass
class TokenMetadata:
    text: str
    timestep: int
    start_time: float


@dataclass
class CandidateTranscript:
    tokens: list[TokenMetadata]
    confidence: float


@dataclass
class Metadata:
    transcripts: list[CandidateTranscript]


@dataclass
class Calls:
    """What the adapter asked of the model, for the tests to check."""

    scorer: str | None = None
    alpha_beta: tuple[float, float] | None = None
    beam_width: int | None = None
    audio_lengths: list[int] = field(default_factory=list)


class Model:
    sample_rate = 16_000
    instances: list[Model] = []

    def __init__(self, model_path: str) -> None:
        with open(model_path, "rb") as handle:
            if not handle.read(len(MODEL_MAGIC)) == MODEL_MAGIC:
                raise RuntimeError("CreateModel failed with 'Failed to initialize memory mapped model.' (0x3000)")
        self.calls = Calls()
        self._next_word = 0
        Model.instances.append(self)

    def sampleRate(self) -> int:
        return self.sample_rate

    def enableExternalScorer(self, scorer_path: str) -> None:
        with open(scorer_path, "rb"):
            pass
        self.calls.scorer = scorer_path

    def setScorerAlphaBeta(self, alpha: float, beta: float) -> None:
        if self.calls.scorer is None:
            raise RuntimeError("Error: Scorer not enabled (0x2005)")
        self.calls.alpha_beta = (alpha, beta)

    def setBeamWidth(self, beam_width: int) -> None:
        self.calls.beam_width = beam_width

    def sttWithMetadata(self, audio_buffer: Any, num_results: int = 1) -> Metadata:
        audio = np.asarray(audio_buffer)
        if audio.dtype != np.int16:
            raise TypeError("audio must be 16-bit integers")
        self.calls.audio_lengths.append(len(audio))
        tokens: list[TokenMetadata] = []
        for start in _bursts(audio, self.sample_rate):
            word = WORDS[self._next_word % len(WORDS)]
            self._next_word += 1
            if tokens:
                tokens.append(TokenMetadata(" ", round(start / FRAME_SECONDS) - 1, start - FRAME_SECONDS))
            step = BURST_SECONDS / len(word)  # the letters spread over the burst, as speech spreads over time
            tokens.extend(
                TokenMetadata(letter, round((start + i * step) / FRAME_SECONDS), round(start + i * step, 3))
                for i, letter in enumerate(word)
            )
        return Metadata([CandidateTranscript(tokens, confidence=-5.0)][:num_results])


def _bursts(audio: Any, rate: int) -> list[float]:
    """Start times (seconds) of each run of loud 20 ms frames."""
    frame = int(rate * FRAME_SECONDS)
    starts: list[float] = []
    loud_before = False
    for index in range(0, len(audio) - frame + 1, frame):
        loud = float(np.mean(np.abs(audio[index:index + frame].astype(np.int32)))) > THRESHOLD
        if loud and not loud_before:
            starts.append(index / rate)
        loud_before = loud
    return starts


def version() -> str:
    return "stand-in"
