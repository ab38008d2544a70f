"""Audio bytes in, :class:`Transcript` out: decode, pick the model, recognise each channel.

The one path shared by the server's workers and ``callpipe-asr transcribe``. Blocking: callers
run it off the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from .audio import AudioLimits, decode_audio
from .engines import ModelRegistry, resolve_model_name
from .settings import Settings
from .transcript import AudioHints, RecognitionOptions, Transcript, merge_channel_transcripts

log = logging.getLogger(__name__)


class Recognizer:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self._settings = settings
        self._registry = registry
        self._limits = AudioLimits(settings.audio.max_duration_seconds, settings.audio.max_channels)

    def recognize(self, audio: bytes, hints: AudioHints | None, options: RecognitionOptions, job_id: str = "-") -> Transcript:
        started = time.perf_counter()
        decoded = decode_audio(audio, hints, self._limits, options.channel_mode)
        decoded_at = time.perf_counter()
        engine = self._registry.get(resolve_model_name(options.model, self._settings))
        per_channel = [engine.transcribe(samples, options) for samples in decoded.channels]
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
