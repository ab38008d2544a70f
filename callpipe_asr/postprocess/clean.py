"""The filters in the order they run, applied to one channel's transcript."""

from __future__ import annotations

import dataclasses
import logging

from ..transcript import Segment, Transcript
from .known_phrases import is_known_hallucination
from .policy import FilterPolicy
from .repetition import collapse_repetitions
from .signals import has_words, is_degenerate, is_silence, is_weak

log = logging.getLogger(__name__)


def clean_transcript(transcript: Transcript, policy: FilterPolicy) -> Transcript:
    """The transcript without the segments the model invented.

    Order matters: segments without words and those the model itself marks as silence go first;
    loops are then collapsed (a loop of "Thank you." becomes one "Thank you."), so what remains
    degenerate after that is dropped, and a collapsed known phrase is judged like any other.
    """
    segments = [s for s in transcript.segments if _keep(s, has_words(s), "no words")]
    segments = [s for s in segments if _keep(s, not is_silence(s, policy), "the model's no-speech signal")]
    segments = collapse_repetitions(segments, policy.max_ngram_repeats)
    segments = [s for s in segments if _keep(s, not is_degenerate(s, policy), "a repetition loop")]
    if policy.drop_known_hallucinations:
        segments = [
            s for s in segments
            if _keep(s, not (is_known_hallucination(s.text) and is_weak(s, policy)), "a known silence phrase with weak signals")
        ]
    if len(segments) == len(transcript.segments) and all(a is b for a, b in zip(segments, transcript.segments, strict=True)):
        return transcript
    return dataclasses.replace(transcript, segments=tuple(segments))


def _keep(segment: Segment, keep: bool, reason: str) -> bool:
    """``keep``, logging a dropped segment (debug: transcripts are callers' words)."""
    if not keep:
        log.debug("dropped segment %.2f-%.2f s (%s): %r", segment.start, segment.end, reason, segment.text)
    return keep
