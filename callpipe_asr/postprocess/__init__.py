"""Filters that take invented text out of a :class:`Transcript` after recognition.

Whisper-family models write words where there are none: "Thank you for watching" on silence,
a phrase looped a dozen times over music on hold. Speech detection before recognition removes
most of it; these filters remove what still gets through, using only what a Transcript carries
(the model's no-speech probability, average log-probability and word probabilities, and the
text itself), so they work for any engine that reports those signals and do nothing to one that
does not.
"""

from .clean import clean_transcript
from .policy import FilterPolicy

__all__ = ["FilterPolicy", "clean_transcript"]
