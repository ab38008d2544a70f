"""The small interface every speech engine implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..transcript import RecognitionOptions, Transcript

SAMPLE_RATE_HZ = 16_000
"""Every engine is fed 16 kHz mono float32 samples; those whose models want another rate
(8 kHz telephony models) convert inside."""


class Engine(Protocol):
    """A loaded model that turns 16 kHz mono float32 samples into a :class:`Transcript`.

    ``transcribe`` is blocking and CPU-bound: callers run it off the event loop, in the worker
    pool, and may call it from several threads at once up to the concurrency the engine was
    loaded for.
    """

    name: str
    """The configured model name."""

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        """Recognise one channel of audio (numpy float32 at 16 kHz)."""
        ...

    def close(self) -> None:
        """Free the model's memory."""
        ...


@runtime_checkable
class LanguageDetector(Protocol):
    """An engine that can say which language speech is in (multilingual Whisper models)."""

    def detect_language(self, samples: Any) -> list[tuple[str, float]]:
        """(ISO 639-1 code, probability) for every language the model knows, most likely first;
        [] where there is no speech to judge."""
        ...
