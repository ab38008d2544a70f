"""The repetition-loop guard: a word or phrase that follows itself more often than people do.

A decoder caught in a loop writes "press one press one press one ..." until its window ends, and
the loop often runs across segment boundaries, so runs are found in the channel's whole word
sequence, not segment by segment. A run of more than ``max_repeats`` copies of one n-gram (1 to
:data:`MAX_NGRAM_WORDS` words) keeps its first copy: people say "no, no, no" (three) but not
"no" eight times, and the first copy is usually what was really said.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from ..transcript import Segment, Word

MAX_NGRAM_WORDS = 6
"""Longest phrase checked for loops; Whisper's loops are short phrases or single sentences."""


def collapse_repetitions(segments: Sequence[Segment], max_repeats: int) -> list[Segment]:
    """The segments with every over-long run of a repeated n-gram cut to one copy; segments left
    without words are dropped. ``max_repeats`` 0 returns them unchanged."""
    if max_repeats < 1:
        return list(segments)
    tokens = [(index, position, token) for index, segment in enumerate(segments)
              for position, token in enumerate(_tokens(segment))]
    dropped = repeated_positions([token for _, _, token in tokens], max_repeats)
    if not dropped:
        return list(segments)
    drop_by_segment: dict[int, set[int]] = {}
    for flat in dropped:
        index, position, _ = tokens[flat]
        drop_by_segment.setdefault(index, set()).add(position)
    kept: list[Segment] = []
    for index, segment in enumerate(segments):
        rebuilt = _without(segment, drop_by_segment.get(index, set()))
        if rebuilt is not None:
            kept.append(rebuilt)
    return kept


def repeated_positions(tokens: Sequence[str], max_repeats: int, max_n: int = MAX_NGRAM_WORDS) -> set[int]:
    """Positions in ``tokens`` that repeat an n-gram beyond ``max_repeats`` consecutive copies
    (every copy after the first of such a run), ignoring case and punctuation. Shorter n-grams
    are tried first, so "one two one two ..." is a run of the bigram, not of nothing."""
    keys = [_key(token) for token in tokens]
    dropped: set[int] = set()
    start = 0
    while start < len(keys):
        run_end = _first_long_run(keys, start, max_repeats, max_n)
        if run_end is None:
            start += 1
            continue
        first_copy_end, end = run_end
        dropped.update(range(first_copy_end, end))
        start = end
    return dropped


def _first_long_run(keys: Sequence[str], start: int, max_repeats: int, max_n: int) -> tuple[int, int] | None:
    """(end of the first copy, end of the run) of the shortest n-gram at ``start`` that repeats
    more than ``max_repeats`` times in a row, or None."""
    for n in range(1, max_n + 1):
        gram = list(keys[start:start + n])
        if len(gram) < n or not any(gram):
            return None
        copies, end = 1, start + n
        while list(keys[end:end + n]) == gram:
            copies, end = copies + 1, end + n
        if copies > max_repeats:
            return start + n, end
    return None


def _tokens(segment: Segment) -> list[str]:
    """The segment's words as the engine wrote them, or its whitespace-separated text."""
    if segment.words:
        return [word.text for word in segment.words]
    return segment.text.split()


def _key(token: str) -> str:
    """Case and punctuation do not make a copy different: "Bye." repeats "bye,"."""
    return re.sub(r"[\W_]+", "", token.casefold())


def _without(segment: Segment, positions: set[int]) -> Segment | None:
    """The segment without the tokens at ``positions``; None when nothing with a letter is left."""
    if not positions:
        return segment
    if segment.words:
        words = tuple(word for position, word in enumerate(segment.words) if position not in positions)
        if not any(_key(word.text) for word in words):
            return None
        return dataclasses.replace(
            segment,
            text="".join(word.text for word in words),
            start=words[0].start,
            end=words[-1].end,
            words=words,
            confidence=_mean_confidence(words),
        )
    kept = [token for position, token in enumerate(segment.text.split()) if position not in positions]
    if not any(_key(token) for token in kept):
        return None
    return dataclasses.replace(segment, text=" " + " ".join(kept))


def _mean_confidence(words: Sequence[Word]) -> float | None:
    known = [word.confidence for word in words if word.confidence is not None]
    return round(sum(known) / len(known), 4) if known else None
