"""Audio bytes in, :class:`Transcript` out: decode, pick the model, settle the language, recognise
each channel, and take out what the model invented (:mod:`.postprocess`) before channels are
merged.

The one path shared by the server's workers and ``callpipe-asr transcribe``. Blocking: callers
run it off the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, ContextManager, Protocol

import numpy as np

from .audio import AudioLimits, decode_audio
from .engines import Engine, LanguageDetector, ModelRequest, select_model
from .engines.selection import can_detect, speaks
from .engines.sources import installed_models
from .languages import DetectedLanguage, choose_language
from .postprocess import FilterPolicy, clean_transcript
from .postprocess.casing import BARE_WORD_ENGINES, restore_casing
from .settings import ModelSettings, Settings
from .transcript import AudioHints, DecodedAudio, RecognitionOptions, Transcript, merge_channel_transcripts

log = logging.getLogger(__name__)


class EngineSource(Protocol):
    """What the recognizer needs of a registry: a loaded engine, held for one recognition."""

    def use(self, name: str) -> ContextManager[Engine]: ...


class Recognizer:
    def __init__(self, settings: Settings, registry: EngineSource) -> None:
        self._settings = settings
        self._registry = registry
        self._limits = AudioLimits(settings.audio.max_duration_seconds, settings.audio.max_channels)
        self._installed = installed_models(settings)

    def recognize(self, audio: bytes, hints: AudioHints | None, options: RecognitionOptions, job_id: str = "-") -> Transcript:
        started = time.perf_counter()
        decoded = decode_audio(audio, hints, self._limits, options.channel_mode)
        decoded_at = time.perf_counter()
        model_name = select_model(ModelRequest.of(options), self._settings, self._installed)
        model = self._settings.models[model_name]
        if len(decoded.channels) > 1:  # channels are merged in time order: their segments need times
            options = dataclasses.replace(options, segment_timestamps=True)
        with self._registry.use(model_name) as engine:
            options, detected = self._settle_language(engine, model, decoded, options)
            per_channel = [self._finish(engine.transcribe(samples, options), model, options, detected) for samples in decoded.channels]
        if len(per_channel) == 1:
            transcript = dataclasses.replace(per_channel[0], duration=decoded.duration)
        else:
            transcript = merge_channel_transcripts(per_channel)
        elapsed = time.perf_counter() - started
        log.info(
            "job %s: %.1f s of %s/%s audio (%d ch) decoded in %.3f s, recognised by %s in %.2f s, RTF %.3f",
            job_id, decoded.duration, decoded.source_format, decoded.source_codec, decoded.source_channels,
            decoded_at - started, engine.name, elapsed - (decoded_at - started), elapsed / max(decoded.duration, 1e-6),
        )
        log.debug("job %s transcript: %s", job_id, transcript.text)
        return transcript

    def _settle_language(
        self, engine: Engine, model: ModelSettings, decoded: DecodedAudio, options: RecognitionOptions
    ) -> tuple[RecognitionOptions, DetectedLanguage | None]:
        """Detect the language where the request left it open and the model can: among the
        request's candidates, else ``languages.detection_languages``; an unsure guess becomes
        ``languages.fallback_language``. Detection judges every channel's speech together."""
        if options.language is not None or not can_detect(model) or not isinstance(engine, LanguageDetector):
            return options, None
        probabilities = engine.detect_language(_joined(decoded.channels))
        if not probabilities:  # no speech: nothing to judge, and nothing will be recognised
            return options, None
        allowed = options.language_candidates or self._settings.languages.detection_languages
        allowed = tuple(code for code in allowed if speaks(model, code))
        detected = choose_language(
            probabilities, allowed, self._settings.languages.min_detection_confidence, self._settings.languages.fallback_language
        )
        log.info("language %s detected (confidence %s%s)", detected.language, detected.confidence,
                 ", unsure: the fallback" if detected.fell_back else "")
        return dataclasses.replace(options, language=detected.language), detected

    def _finish(
        self, transcript: Transcript, model: ModelSettings, options: RecognitionOptions, detected: DetectedLanguage | None
    ) -> Transcript:
        """Invented text out; casing and full stops for bare-lowercase engines; the detection's
        confidence recorded."""
        transcript = clean_transcript(transcript, FilterPolicy.from_model_settings(model))
        if model.engine in BARE_WORD_ENGINES and model.restore_casing:
            transcript = restore_casing(transcript, options.language)
        if detected is not None:
            transcript = dataclasses.replace(transcript, language=detected.language, language_confidence=detected.confidence)
        return transcript


def _joined(channels: tuple[Any, ...]) -> Any:
    return channels[0] if len(channels) == 1 else np.concatenate(channels)

