"""Per-segment judgements from the model's own signals and the shape of the text."""

from __future__ import annotations

import zlib

from ..transcript import Segment
from .policy import FilterPolicy


def has_words(segment: Segment) -> bool:
    """Whether the text has a letter or digit in any script: "♪ ♪", "..." and "-" have none."""
    return any(char.isalnum() for char in segment.text)


def is_silence(segment: Segment, policy: FilterPolicy) -> bool:
    """Whisper's own rule for a window with no speech, applied per segment: the model says
    "probably no speech" and is unsure of the words it wrote. Both signals are needed; either
    alone also fires on quiet or accented real speech."""
    if segment.no_speech_probability is None or segment.avg_logprob is None:
        return False
    return segment.no_speech_probability > policy.no_speech_threshold and segment.avg_logprob < policy.log_prob_threshold


def compression_ratio(text: str) -> float:
    """Bytes of the text over bytes of its zlib compression, as Whisper computes it: a phrase
    looped many times compresses far better than language does (loops score above 2.4)."""
    data = text.encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))


def is_degenerate(segment: Segment, policy: FilterPolicy) -> bool:
    """The segment's text is still a repetition loop (after repeats were collapsed)."""
    return compression_ratio(segment.text.strip()) > policy.compression_ratio_threshold


def is_weak(segment: Segment, policy: FilterPolicy) -> bool:
    """Whether any of the model's signals doubts the segment. A segment without signals (an
    engine that reports none) is never weak: nothing then justifies dropping its words."""
    if segment.no_speech_probability is not None and segment.no_speech_probability >= policy.weak_no_speech_probability:
        return True
    if segment.avg_logprob is not None and segment.avg_logprob <= policy.weak_avg_logprob:
        return True
    return segment.confidence is not None and segment.confidence < policy.weak_word_confidence
