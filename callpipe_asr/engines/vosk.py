"""Vosk (Kaldi): any Vosk model directory, 8 kHz telephony models included.

The model loads once and is shared; each recognition gets its own ``KaldiRecognizer`` (cheap,
and what makes concurrent recognitions safe), with word output on, fed 16 kHz PCM in chunks
(Kaldi resamples to the model's own rate). Every time Vosk ends an utterance its result becomes
a segment; the final result closes the last one. Words carry Vosk's times and confidences;
bracketed tokens (``[unk]``, ``[noise]``) are not words. Vosk writes bare lowercase words; the
pipeline restores casing and full stops (:mod:`..postprocess.casing`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..settings import ModelSettings
from ..transcript import RecognitionOptions, Segment, Transcript, Word
from .base import SAMPLE_RATE_HZ
from .pcm import chunks, segment_of, to_pcm16

log = logging.getLogger(__name__)

MODEL_MARKERS = ("am", "conf", "graph")
"""Folders every Vosk model directory has."""
QUIET = -1
"""Vosk's log level that keeps Kaldi's progress lines off stderr."""


class VoskEngine:
    """One loaded Vosk model, shared by every worker thread."""

    def __init__(self, name: str, model_dir: Path, settings: ModelSettings) -> None:
        try:
            import vosk  # imported here: only this engine needs it
        except ImportError as exc:
            raise EngineError("the vosk engine needs the package vosk: pip install 'callpipe-asr[vosk]'") from exc
        missing = [marker for marker in MODEL_MARKERS if not (model_dir / marker).is_dir()]
        if missing:
            raise EngineError(f"model '{name}': {model_dir} is not a Vosk model directory (no {', '.join(missing)} folder)")
        self.name = name
        self._vosk = vosk
        self._language = settings.languages[0] if settings.languages else None
        vosk.SetLogLevel(QUIET)
        started = time.perf_counter()
        try:
            self._model = vosk.Model(str(model_dir))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise EngineError(f"model '{name}': Vosk could not load {model_dir}: {exc}") from exc
        log.info("model %s loaded from %s in %.2f s (Vosk)", name, model_dir, time.perf_counter() - started)

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        recognizer = self._vosk.KaldiRecognizer(self._model, SAMPLE_RATE_HZ)
        recognizer.SetWords(True)
        segments: list[Segment] = []
        for chunk in chunks(to_pcm16(samples), SAMPLE_RATE_HZ):
            if recognizer.AcceptWaveform(chunk):
                _append(segments, recognizer.Result())
        _append(segments, recognizer.FinalResult())
        return Transcript(
            segments=tuple(segments),
            language=options.language or self._language,
            duration=len(samples) / SAMPLE_RATE_HZ,
            model=self.name,
        )

    def close(self) -> None:
        del self._model


def _append(segments: list[Segment], result_json: str) -> None:
    segment = segment_of(words_from_result(result_json))
    if segment is not None:
        segments.append(segment)


def words_from_result(result_json: str) -> list[Word]:
    """The words of one Vosk result (``{"result": [{"word", "start", "end", "conf"}], "text"}``)."""
    try:
        result = json.loads(result_json)
    except ValueError as exc:
        raise EngineError(f"Vosk returned a result that is not JSON: {exc}") from exc
    words: list[Word] = []
    for item in result.get("result") or ():
        text = str(item.get("word", "")).strip()
        if not text or text.startswith("[") or text.startswith("<"):
            continue
        confidence = item.get("conf")
        words.append(Word(
            text=text,
            start=round(float(item.get("start", 0.0)), 3),
            end=round(float(item.get("end", 0.0)), 3),
            confidence=round(min(1.0, max(0.0, float(confidence))), 4) if confidence is not None else None,
        ))
    return words
