"""The phrases Whisper is known to invent on silence, music and noise.

They come from its training data, where subtitles end with credits and sign-offs: "Thank you for
watching", "Subtitles by the Amara.org community". On a voicemail they are never what a caller
said, unless they are: a real "Thank you." ends many messages. So a known phrase is dropped only
when the segment's own signals are weak (see :func:`signals.is_weak`).
"""

from __future__ import annotations

import re

KNOWN_PHRASES = frozenset({
    "thank you",
    "thank you very much",
    "thank you so much",
    "thanks",
    "thank you for watching",
    "thanks for watching",
    "thank you for watching and see you next time",
    "thank you so much for watching",
    "thank you for listening",
    "thanks for listening",
    "please subscribe",
    "please like and subscribe",
    "like and subscribe",
    "dont forget to like and subscribe",
    "see you next time",
    "see you in the next video",
    "bye",
    "bye bye",
    "you",
    "so",
    "music",
    "applause",
    "laughter",
    "silence",
    "the end",
})
"""Whole-segment texts, in :func:`phrase_key` form."""

KNOWN_PREFIXES = (
    "subtitles by",
    "subtitled by",
    "captions by",
    "captioning by",
    "closed captioning",
    "transcribed by",
    "transcription by",
    "translated by",
    "translation by",
    "copyright",
    "untertitel",
    "sous titrage",
    "sous titres",
    "subtitulado por",
    "subtitulos por",
)
"""Credits that go on with a name ("Subtitles by the Amara.org community")."""

KNOWN_FRAGMENTS = ("amara org", "www ", "http")
"""Anywhere in a segment: web addresses and the subtitle community Whisper learnt credits from."""


def phrase_key(text: str) -> str:
    """Case-folded words of any script, punctuation and brackets removed: "[Music]" -> "music"."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())


def is_known_hallucination(text: str) -> bool:
    """Whether the whole text is one of the phrases Whisper invents, or a credit line."""
    key = phrase_key(text)
    if not key:
        return False
    if key in KNOWN_PHRASES:
        return True
    padded = key + " "
    return key.startswith(KNOWN_PREFIXES) or any(fragment in padded for fragment in KNOWN_FRAGMENTS)
