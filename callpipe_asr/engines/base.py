"""The small interface every speech engine implements."""

from __future__ import annotations

from typing import Any, Protocol

from ..transcript import RecognitionOptions, Transcript


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
