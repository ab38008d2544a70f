"""Scoring one transcript against the recording it came from.

The references know where every sentence is and where the speech ends; the transcripts carry word
times. So besides the word error rate (with the one normaliser, :mod:`callpipe_asr.scoring`),
each composite answers: did every sentence come back at its place (VAD cropping and segment
boundaries lose nothing), and was anything written after the speech ended (invented text on the
trailing silence or music)?
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from callpipe_asr.scoring import NO_ERRORS, WordErrors, normalized_words, word_errors
from callpipe_asr.transcript import Transcript, Word

from .corpus import Recording, Sentence

if TYPE_CHECKING:
    from .direct import Outcome, Run

SENTENCE_WINDOW_SECONDS = 1.5
"""A sentence's words may be stamped this far outside where the reference puts it."""
SENTENCE_RECALL_PRESENT = 0.5
"""A sentence counts as present when at least this share of its words is heard in its window."""
AFTER_SPEECH_GRACE_SECONDS = 1.0
"""Words starting later than this after the speech ended are invented."""


@dataclass(frozen=True)
class Score:
    """One transcript against its recording."""

    errors: WordErrors
    words_emitted: int
    """Normalised words in the transcript (the count that must be 0 on non-speech)."""
    words_after_speech: int
    """Words starting after the speech ended (composites; 0 for prompts)."""
    sentences: int
    sentences_present: int


def score(recording: Recording, transcript: Transcript) -> Score:
    emitted = len(normalized_words(transcript.text))
    if recording.kind == "nonspeech":
        return Score(NO_ERRORS, emitted, emitted, 0, 0)
    words = _timed_words(transcript)
    present = sum(1 for sentence in recording.sentences if _present(sentence, words))
    after = recording.speech_end + AFTER_SPEECH_GRACE_SECONDS
    return Score(
        errors=word_errors(recording.text, transcript.text),
        words_emitted=emitted,
        words_after_speech=sum(len(normalized_words(w.text)) for w in words if w.start > after),
        sentences=len(recording.sentences),
        sentences_present=present,
    )


def _timed_words(transcript: Transcript) -> list[Word]:
    """The transcript's words with times; a segment without word times counts as one word span."""
    words: list[Word] = []
    for segment in transcript.segments:
        if segment.words:
            words.extend(segment.words)
        elif segment.text.strip():
            words.append(Word(segment.text, segment.start, segment.end))
    return words


def _present(sentence: Sentence, words: list[Word]) -> bool:
    """At least half the sentence's words are among the words whose middle lies in its window."""
    start, end = sentence.start - SENTENCE_WINDOW_SECONDS, sentence.end + SENTENCE_WINDOW_SECONDS
    heard = Counter(w for word in words if start <= (word.start + word.end) / 2 <= end for w in normalized_words(word.text))
    wanted = Counter(normalized_words(sentence.text))
    if not wanted:
        return True
    found = sum(min(count, heard[word]) for word, count in wanted.items())
    return found / sum(wanted.values()) >= SENTENCE_RECALL_PRESENT


@dataclass(frozen=True)
class Totals:
    """Scores summed over a set of transcripts."""

    recordings: int
    errors: WordErrors
    words_emitted: int
    words_after_speech: int
    sentences: int
    sentences_present: int

    @property
    def wer(self) -> float | None:
        return self.errors.rate if self.errors.reference_words else None


def total(scores: list[Score]) -> Totals:
    errors = NO_ERRORS
    for item in scores:
        errors = errors + item.errors
    return Totals(
        recordings=len(scores),
        errors=errors,
        words_emitted=sum(s.words_emitted for s in scores),
        words_after_speech=sum(s.words_after_speech for s in scores),
        sentences=sum(s.sentences for s in scores),
        sentences_present=sum(s.sentences_present for s in scores),
    )


def total_of(outcomes: Sequence[Outcome]) -> Totals:
    """Every outcome scored against its recording, summed."""
    return total([score(o.request.recording, o.transcript) for o in outcomes])


def run_totals(run: Run) -> Totals:
    return total_of(run.outcomes)
