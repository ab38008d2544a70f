"""The repetition-loop guard on synthetic transcripts: runs longer than ``max_ngram_repeats``
collapse to one copy, across segment boundaries, with words, times and text kept consistent."""

from __future__ import annotations

from callpipe_asr.postprocess import FilterPolicy, clean_transcript
from callpipe_asr.postprocess.repetition import collapse_repetitions, repeated_positions
from callpipe_asr.settings import ModelSettings
from callpipe_asr.transcript import Segment, Transcript, Word

POLICY = FilterPolicy.from_model_settings(ModelSettings())


def segment(text: str, start: float = 0.0, confidence: float = 0.9) -> Segment:
    words = tuple(Word(f" {token}", start + i * 0.5, start + i * 0.5 + 0.4, confidence) for i, token in enumerate(text.split()))
    return Segment(f" {text}", start, start + 0.5 * len(words), words=words, confidence=confidence,
                   no_speech_probability=0.02, avg_logprob=-0.3)


def cleaned_text(*segments: Segment, policy: FilterPolicy = POLICY) -> str:
    return clean_transcript(Transcript(segments=segments, language="en", duration=60.0), policy).text


def test_a_word_looped_past_the_limit_keeps_one_copy() -> None:
    assert cleaned_text(segment("Call me back back back back back back back back please")) == "Call me back please"


def test_a_phrase_looped_past_the_limit_keeps_one_copy() -> None:
    looped = "To repeat this menu press star. " + "Press one. " * 9 + "Goodbye."
    assert cleaned_text(segment(looped)) == "To repeat this menu press star. Press one. Goodbye."


def test_repeats_people_really_make_are_kept() -> None:
    assert cleaned_text(segment("No, no, no. It's the blue one, the blue one.")) == "No, no, no. It's the blue one, the blue one."


def test_the_loop_is_found_across_segment_boundaries_and_emptied_segments_go() -> None:
    segments = [segment("Please call me back.")] + [segment("Thank you.", 2.0 + i) for i in range(8)]
    assert cleaned_text(*segments) == "Please call me back. Thank you."


def test_a_collapsed_segment_keeps_consistent_words_times_and_confidence() -> None:
    words = (Word(" go", 0.0, 0.3, 0.9),) + tuple(Word(" on", 0.4 + i, 0.7 + i, 0.5) for i in range(6)) + (Word(" now", 7.0, 7.3, 0.7),)
    looped = Segment(" go on on on on on on now", 0.0, 7.3, words=words, confidence=0.6, no_speech_probability=0.0, avg_logprob=-0.2)

    (result,) = collapse_repetitions([looped], max_repeats=3)

    assert result.text == " go on now"
    assert [w.text for w in result.words] == [" go", " on", " now"]
    assert (result.start, result.end) == (0.0, 7.3)
    assert result.confidence == round((0.9 + 0.5 + 0.7) / 3, 4)


def test_segments_without_word_times_are_collapsed_on_their_text() -> None:
    plain = Segment(" bye bye bye bye bye bye see you", 0.0, 3.0, no_speech_probability=0.0, avg_logprob=-0.2)
    (result,) = collapse_repetitions([plain], max_repeats=3)
    assert result.text == " bye see you"
    assert result.words == ()


def test_case_and_punctuation_do_not_hide_a_repeat() -> None:
    assert repeated_positions(["Bye.", "bye,", "BYE", "bye!", "bye"], max_repeats=3) == {1, 2, 3, 4}


def test_the_shortest_repeating_phrase_is_the_one_collapsed() -> None:
    keys = "one two one two one two one two three".split()
    assert repeated_positions(keys, max_repeats=3) == {2, 3, 4, 5, 6, 7}


def test_a_max_of_zero_turns_the_guard_off() -> None:
    policy = FilterPolicy.from_model_settings(ModelSettings(max_ngram_repeats=0))
    looped = segment("hello hello hello hello hello")
    assert collapse_repetitions([looped], max_repeats=0) == [looped]
    assert cleaned_text(looped, policy=policy) == "hello hello hello hello hello"
