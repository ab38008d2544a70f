"""Whisper through faster-whisper (CTranslate2): the default engine, on CPU or CUDA."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..settings import ModelSettings
from ..transcript import RecognitionOptions, Segment, Task, Transcript, Word

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000


class FasterWhisperEngine:
    """One loaded CTranslate2 Whisper model, shared by every worker thread of the process."""

    def __init__(self, name: str, model_path: Path, settings: ModelSettings, concurrency: int = 1) -> None:
        from faster_whisper import WhisperModel  # imported here: only this engine needs it

        self.name = name
        self._settings = settings
        started = time.perf_counter()
        try:
            self._model = WhisperModel(
                str(model_path),
                device=settings.device,
                compute_type=settings.compute_type,
                cpu_threads=settings.cpu_threads,
                num_workers=max(1, concurrency),
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"model '{name}' could not be loaded from {model_path}: {exc}") from exc
        self.multilingual = bool(self._model.model.is_multilingual)
        log.info("model %s loaded from %s in %.2f s (%s, %s)", name, model_path,
                 time.perf_counter() - started, settings.device, settings.compute_type)

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        language = options.language if self.multilingual else "en"
        task = options.task.value if self.multilingual else Task.TRANSCRIBE.value
        try:
            segments_iter, info = self._model.transcribe(
                samples,
                language=language,
                task=task,
                beam_size=self._settings.beam_size,
                initial_prompt=options.prompt or None,
                hotwords=" ".join(options.hotwords) or None,
                word_timestamps=options.word_timestamps,
                vad_filter=self._settings.vad_filter,
                temperature=options.temperature if options.temperature is not None else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                condition_on_previous_text=False,
            )
            segments = tuple(_segment(s) for s in segments_iter)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"recognition failed: {exc}") from exc
        return Transcript(
            segments=segments,
            language=info.language,
            duration=len(samples) / SAMPLE_RATE_HZ,
            model=self.name,
        )

    def close(self) -> None:
        del self._model


def _segment(raw: Any) -> Segment:
    words = tuple(
        Word(text=w.word, start=round(w.start, 3), end=round(w.end, 3), confidence=round(w.probability, 4))
        for w in (raw.words or ())
    )
    confidence = sum(w.confidence or 0.0 for w in words) / len(words) if words else None
    return Segment(
        text=raw.text,
        start=round(raw.start, 3),
        end=round(raw.end, 3),
        words=words,
        confidence=round(confidence, 4) if confidence is not None else None,
        no_speech_probability=round(raw.no_speech_prob, 4),
        avg_logprob=round(raw.avg_logprob, 4),
    )
