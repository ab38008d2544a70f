"""Mozilla DeepSpeech and its successor Coqui STT: ``.pbmm`` / ``.tflite`` acoustic models with an
optional ``.scorer`` language model, the engine the project first fronted.

Both packages share one API (``Model``, ``enableExternalScorer``, ``setScorerAlphaBeta``,
``setBeamWidth``, ``sampleRate``, ``sttWithMetadata``); Coqui's ``stt`` is tried first, then
``deepspeech``. Their wheels exist only for old Pythons (``deepspeech`` 0.9.3 up to 3.9, ``stt``
1.4 for 3.10), hence the extra's environment markers. The models were trained on short
utterances, so a long recording is fed in windows of at most :data:`WINDOW_SECONDS`, each cut
at the quietest moment near its end rather than through a word. Words are rebuilt from the
per-character tokens and their times. Output is bare lowercase; the pipeline restores casing.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from ..settings import ModelSettings
from ..transcript import RecognitionOptions, Segment, Transcript, Word
from .base import SAMPLE_RATE_HZ
from .pcm import resample, segment_of, to_pcm16
from .sources import resolve_path

log = logging.getLogger(__name__)

PACKAGES = ("stt", "deepspeech")
"""Coqui STT first (maintained longer), then Mozilla DeepSpeech: the same API."""
INSTALL_HINT = (
    "pip install 'callpipe-asr[deepspeech]' on Python 3.9 (deepspeech 0.9.3) or 3.10 (stt 1.4.0); "
    "neither has wheels for newer Pythons"
)
WINDOW_SECONDS = 20.0
"""Longest audio decoded at once: DeepSpeech was trained on utterances of a few seconds."""
CUT_SEARCH_SECONDS = 3.0
"""How far back from a window's end to look for a quiet place to cut."""
CUT_FRAME_SECONDS = 0.05
TOKEN_SECONDS = 0.02
"""One CTC time step: a character's token lasts this long."""
MODEL_SUFFIXES = (".pbmm", ".tflite", ".pb")


def load_package() -> Any:
    """The ``stt`` or ``deepspeech`` module, or :class:`EngineError` saying how to get one."""
    for name in PACKAGES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise EngineError(f"the deepspeech engine needs the package stt or deepspeech: {INSTALL_HINT}")


class DeepSpeechEngine:
    """One DeepSpeech / Coqui STT model, with its scorer when configured."""

    def __init__(self, name: str, model_file: Path, settings: ModelSettings, data_dir: Path) -> None:
        package = load_package()
        if not model_file.is_file():
            raise EngineError(f"model '{name}': no DeepSpeech model file at {model_file} (a .pbmm or .tflite)")
        if model_file.suffix not in MODEL_SUFFIXES:
            log.warning("model %s: %s does not end in %s", name, model_file, ", ".join(MODEL_SUFFIXES))
        self.name = name
        self._language = settings.languages[0] if settings.languages else None
        started = time.perf_counter()
        try:
            self._model = package.Model(str(model_file))
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"model '{name}': {package.__name__} could not load {model_file}: {exc}") from exc
        if settings.scorer:
            self._enable_scorer(resolve_path(settings.scorer, data_dir), settings)
        if settings.beam_size > 1:
            self._model.setBeamWidth(settings.beam_size)
        self._rate = int(self._model.sampleRate())
        self._lock = threading.Lock()
        log.info("model %s loaded from %s in %.2f s (%s, %d Hz)", name, model_file, time.perf_counter() - started,
                 package.__name__, self._rate)

    def _enable_scorer(self, scorer: Path, settings: ModelSettings) -> None:
        if not scorer.is_file():
            raise EngineError(f"model '{self.name}': no scorer file at {scorer}")
        try:
            self._model.enableExternalScorer(str(scorer))
            if settings.scorer_alpha_beta:
                alpha, beta = settings.scorer_alpha_beta
                self._model.setScorerAlphaBeta(alpha, beta)
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"model '{self.name}': the scorer {scorer} could not be used: {exc}") from exc

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        audio = to_pcm16(resample(samples, SAMPLE_RATE_HZ, self._rate))
        segments: list[Segment] = []
        with self._lock:
            for start, end in windows(audio, self._rate):
                try:
                    metadata = self._model.sttWithMetadata(audio[start:end], 1)
                except (RuntimeError, ValueError) as exc:
                    raise EngineError(f"DeepSpeech failed: {exc}") from exc
                tokens = metadata.transcripts[0].tokens if metadata.transcripts else ()
                segment = segment_of(words_from_tokens([(t.text, float(t.start_time)) for t in tokens], start / self._rate))
                if segment is not None:
                    segments.append(segment)
        return Transcript(
            segments=tuple(segments),
            language=options.language or self._language,
            duration=len(samples) / SAMPLE_RATE_HZ,
            model=self.name,
        )

    def close(self) -> None:
        del self._model


def words_from_tokens(tokens: list[tuple[str, float]], offset_seconds: float = 0.0) -> list[Word]:
    """Words from DeepSpeech's character tokens ``(text, start_time)``: characters join until a
    space; a word starts at its first character and ends one time step after its last."""
    words: list[Word] = []
    letters: list[str] = []
    first = last = 0.0
    for text, start_time in [*tokens, (" ", 0.0)]:
        if text == " ":
            if letters:
                words.append(Word(
                    text="".join(letters),
                    start=round(offset_seconds + first, 3),
                    end=round(offset_seconds + last + TOKEN_SECONDS, 3),
                ))
            letters = []
            continue
        if not letters:
            first = start_time
        letters.append(text)
        last = start_time
    return words


def windows(pcm: Any, rate: int, window_seconds: float = WINDOW_SECONDS) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges covering ``pcm``, each at most ``window_seconds`` long and
    cut at the quietest :data:`CUT_FRAME_SECONDS` frame within the last :data:`CUT_SEARCH_SECONDS`."""
    size = int(window_seconds * rate)
    frame = max(1, int(CUT_FRAME_SECONDS * rate))
    search = int(CUT_SEARCH_SECONDS * rate)
    ranges: list[tuple[int, int]] = []
    start = 0
    while len(pcm) - start > size:
        lowest = start + size - search
        energies = [
            (float(np.mean(np.abs(pcm[at:at + frame].astype(np.int32)))), at)
            for at in range(max(start + frame, lowest), start + size - frame + 1, frame)
        ]
        cut = min(energies)[1] + frame // 2 if energies else start + size
        ranges.append((start, cut))
        start = cut
    if start < len(pcm) or not ranges:
        ranges.append((start, len(pcm)))
    return ranges
