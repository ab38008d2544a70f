"""The invented-text filters on synthetic transcripts: the model's no-speech and log-probability
signals, text without words, repetition loops the collapse cannot fix, and the known silence
phrases, which go only when the segment's own signals are weak."""

from __future__ import annotations

import pytest

from callpipe_asr.postprocess import FilterPolicy, clean_transcript
from callpipe_asr.postprocess.known_phrases import is_known_hallucination
from callpipe_asr.postprocess.signals import compression_ratio
from callpipe_asr.settings import ModelSettings
from callpipe_asr.transcript import Segment, Transcript, Word

POLICY = FilterPolicy.from_model_settings(ModelSettings())
CLEAR = {"no_speech_probability": 0.01, "avg_logprob": -0.2, "confidence": 0.95}
"""Signals of speech the model is sure of."""
DOUBTFUL = {"no_speech_probability": 0.7, "avg_logprob": -0.9, "confidence": 0.45}
"""Signals of a phrase written over music: neither silent enough nor sure enough."""


def segment(text: str, start: float = 0.0, **signals: float | None) -> Segment:
    words = tuple(
        Word(f" {token}", start + i * 0.4, start + i * 0.4 + 0.3, signals.get("confidence"))
        for i, token in enumerate(text.split())
    )
    return Segment(
        text=f" {text}", start=start, end=start + 0.4 * max(len(words), 1), words=words,
        confidence=signals.get("confidence"), no_speech_probability=signals.get("no_speech_probability"),
        avg_logprob=signals.get("avg_logprob"),
    )


def transcript(*segments: Segment) -> Transcript:
    return Transcript(segments=segments, language="en", duration=60.0, model="tiny.en")


def test_the_policy_takes_every_threshold_from_the_model_settings() -> None:
    model = ModelSettings(no_speech_threshold=0.5, log_prob_threshold=-0.8, compression_ratio_threshold=2.0,
                          max_ngram_repeats=2, drop_known_hallucinations=False, weak_no_speech_probability=0.2,
                          weak_avg_logprob=-0.6, weak_word_confidence=0.7)
    assert FilterPolicy.from_model_settings(model) == FilterPolicy(0.5, -0.8, 2.0, 2, False, 0.2, -0.6, 0.7)


def test_speech_the_model_is_sure_of_passes_untouched() -> None:
    original = transcript(segment("Please call me back on my cell.", **CLEAR), segment("Thank you.", 3.0, **CLEAR))
    assert clean_transcript(original, POLICY) is original


def test_a_segment_the_model_marks_as_silence_is_dropped() -> None:
    silent = segment("you", 10.0, no_speech_probability=0.94, avg_logprob=-1.3, confidence=0.2)
    cleaned = clean_transcript(transcript(segment("Hello, it's Anna.", **CLEAR), silent), POLICY)
    assert cleaned.text == "Hello, it's Anna."


@pytest.mark.parametrize(("no_speech", "logprob"), [(0.9, -0.5), (0.2, -1.4)])
def test_one_doubtful_signal_alone_keeps_a_segment(no_speech: float, logprob: float) -> None:
    """Quiet or accented real speech trips one signal; only both together mean silence."""
    cleaned = clean_transcript(transcript(segment("I will be late today", no_speech_probability=no_speech,
                                                  avg_logprob=logprob, confidence=0.8)), POLICY)
    assert cleaned.text == "I will be late today"


@pytest.mark.parametrize("text", ["♪ ♪", "...", "-", "♪♪♪ ♪♪♪"])
def test_segments_without_a_letter_or_digit_are_dropped(text: str) -> None:
    assert clean_transcript(transcript(segment(text, **CLEAR)), POLICY).is_empty


def test_words_in_any_script_count_as_words() -> None:
    cleaned = clean_transcript(transcript(segment("Перезвоните мне, пожалуйста", **CLEAR)), POLICY)
    assert cleaned.text == "Перезвоните мне, пожалуйста"


def test_a_loop_with_no_repeated_words_to_collapse_is_dropped_by_its_compression_ratio() -> None:
    """A loop glued into one token cannot be collapsed word by word; it still compresses like one."""
    loop = segment("la" * 120, **CLEAR)
    assert compression_ratio(loop.text) > POLICY.compression_ratio_threshold
    assert clean_transcript(transcript(segment("Call me back.", **CLEAR), loop), POLICY).text == "Call me back."


@pytest.mark.parametrize("text", [
    "Thank you for watching!", "Thanks for watching.", "Thank you.", "you", "Bye.",
    "Subtitles by the Amara.org community", "[Music]", "(applause)", "Transcription by CastingWords",
])
def test_known_silence_phrases_with_weak_signals_are_dropped(text: str) -> None:
    assert is_known_hallucination(text)
    cleaned = clean_transcript(transcript(segment("Your order is ready.", **CLEAR), segment(text, 4.0, **DOUBTFUL)), POLICY)
    assert cleaned.text == "Your order is ready."


@pytest.mark.parametrize("weak", [
    {**CLEAR, "no_speech_probability": POLICY.weak_no_speech_probability},
    {**CLEAR, "avg_logprob": POLICY.weak_avg_logprob},
    {**CLEAR, "confidence": POLICY.weak_word_confidence - 0.01},
])
def test_any_one_weak_signal_makes_a_known_phrase_invented(weak: dict[str, float]) -> None:
    assert clean_transcript(transcript(segment("Thanks for watching!", **weak)), POLICY).is_empty


def test_a_known_phrase_spoken_clearly_is_kept() -> None:
    """A caller's real "Thank you." ends many voicemails."""
    cleaned = clean_transcript(transcript(segment("Call me back.", **CLEAR), segment("Thank you.", 2.0, **CLEAR)), POLICY)
    assert cleaned.text == "Call me back. Thank you."


def test_a_sentence_that_merely_contains_a_known_phrase_is_kept_even_when_weak() -> None:
    cleaned = clean_transcript(transcript(segment("Thank you for calling the pharmacy.", **DOUBTFUL)), POLICY)
    assert cleaned.text == "Thank you for calling the pharmacy."


def test_the_known_phrase_filter_can_be_turned_off() -> None:
    policy = FilterPolicy.from_model_settings(ModelSettings(drop_known_hallucinations=False))
    assert clean_transcript(transcript(segment("Thanks for watching!", **DOUBTFUL)), policy).text == "Thanks for watching!"


def test_an_engine_that_reports_no_signals_keeps_its_words() -> None:
    blind = {"no_speech_probability": None, "avg_logprob": None, "confidence": None}
    cleaned = clean_transcript(transcript(segment("Thank you.", **blind), segment("bye", 2.0, **blind)), POLICY)
    assert cleaned.text == "Thank you. bye"


def test_cleaning_keeps_the_transcript_metadata_and_the_survivors_channels() -> None:
    kept = Segment(" Hello.", 0.0, 1.0, channel=1, no_speech_probability=0.01, avg_logprob=-0.1, confidence=0.9)
    original = Transcript(segments=(kept, segment("♪", 2.0, **CLEAR)), language="en", duration=12.5, channels=2, model="m")
    cleaned = clean_transcript(original, POLICY)
    assert cleaned.segments == (kept,)
    assert (cleaned.language, cleaned.duration, cleaned.channels, cleaned.model) == ("en", 12.5, 2, "m")
