"""Casing and punctuation for bare-lowercase engines: the rules on chosen words, and the
measurement on real PocketSphinx output over Asterisk prompts (the case-insensitive word error
rate must not rise; sentence starts must mostly come out capitalised)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from asr_testkit import Prompt
from callpipe_asr.audio import AudioLimits, decode_audio
from callpipe_asr.engines import ModelRegistry
from callpipe_asr.postprocess.casing import restore_casing, sentence_breaks, style_words
from callpipe_asr.scoring import NO_ERRORS, CasingScore, casing_score, word_errors
from callpipe_asr.settings import BUNDLED_POCKETSPHINX, ModelSettings, load_settings
from callpipe_asr.transcript import ChannelMode, RecognitionOptions, Segment, Transcript, Word

MEASURED_PROMPTS = ("vm-intro", "conf-onlyperson", "agent-alreadyon", "vm-nobodyavail", "conf-getpin", "pbx-invalid")


def words(*timed: tuple[str, float, float]) -> tuple[Word, ...]:
    return tuple(Word(text, start, end) for text, start, end in timed)


def test_pauses_end_sentences() -> None:
    spoken = words(("please", 0.0, 0.3), ("hold", 0.35, 0.6), ("i", 1.4, 1.5), ("will", 1.55, 1.7), ("be", 1.75, 1.9))
    assert sentence_breaks(spoken) == [False, True, False, False, True]


@pytest.mark.parametrize(
    ("texts", "ends", "english", "styled"),
    [
        (["please", "hold"], [False, True], True, ["Please", "hold."]),
        (["i", "dont", "know", "i'm", "out"], [False, False, True, False, True], True, ["I", "don't", "know.", "I'm", "out."]),
        (["can", "you", "call", "me", "back"], [False] * 4 + [True], True, ["Can", "you", "call", "me", "back?"]),
        (["what", "time"], [False, True], True, ["What", "time?"]),
        (["do", "not", "hang", "up"], [False, False, False, True], True, ["Do", "not", "hang", "up."]),
        (["alot", "of", "calls"], [False, False, True], True, ["A lot", "of", "calls."]),
        (["안녕", "하세요"], [False, True], False, ["안녕", "하세요."]),
        (["i", "dont"], [False, True], False, ["I", "dont."]),  # not English: no "I", no spelling table
    ],
)
def test_words_are_styled(texts: list[str], ends: list[bool], english: bool, styled: list[str]) -> None:
    assert style_words(texts, ends, english) == styled


def test_a_transcript_keeps_its_times_and_confidences() -> None:
    segment = Segment(text="please hold i will", start=0.0, end=1.7,
                      words=tuple(Word(w.text, w.start, w.end, 0.8) for w in words(
                          ("please", 0.0, 0.3), ("hold", 0.35, 0.6), ("i", 1.4, 1.5), ("will", 1.55, 1.7))))
    styled = restore_casing(Transcript(segments=(segment,), language="en", duration=2.0), "en")
    assert styled.text == "Please hold. I will."
    assert [(w.start, w.end, w.confidence) for w in styled.words] == [(w.start, w.end, 0.8) for w in segment.words]


def test_the_capitalisation_score_reads_sentence_starts_from_the_reference() -> None:
    score = casing_score("That agent is here.  Please enter your number.", "That agent is here please. Enter your number.")
    assert score == CasingScore(sentence_starts=2, starts_capitalised=1, inner_words=6, inner_capitalised=1)


@pytest.mark.e2e
def test_on_real_pocketsphinx_output_wer_does_not_rise_and_sentences_start_capitalised(
    tmp_path: Path, prompts: dict[str, Prompt]
) -> None:
    if importlib.util.find_spec("pocketsphinx") is None:
        pytest.skip("pocketsphinx is not installed (pip install 'callpipe-asr[pocketsphinx]')")
    settings = replace(load_settings(None, environ={}), data_dir=tmp_path, default_model="sphinx",
                       models={"sphinx": ModelSettings(engine="pocketsphinx", source=BUNDLED_POCKETSPHINX)})
    registry = ModelRegistry(settings, concurrency=1)
    engine = registry.get("sphinx")
    raw_errors = styled_errors = NO_ERRORS
    raw_score = styled_score = CasingScore(0, 0, 0, 0)
    for name in MEASURED_PROMPTS:
        prompt = prompts[name]
        decoded = decode_audio(prompt.audio, None, AudioLimits(3600, 8), ChannelMode.MIX)
        raw = engine.transcribe(decoded.channels[0], RecognitionOptions())
        styled = restore_casing(raw, "en")
        raw_errors += word_errors(prompt.text, raw.text)
        styled_errors += word_errors(prompt.text, styled.text)
        raw_score += casing_score(prompt.text, raw.text)
        styled_score += casing_score(prompt.text, styled.text)
    registry.close()
    assert styled_errors.rate <= raw_errors.rate
    assert raw_score.starts_capitalised == 0
    assert styled_score.sentence_starts >= 3
    started = styled_score.starts_capitalised / styled_score.sentence_starts
    print(f"PocketSphinx on {len(MEASURED_PROMPTS)} prompts: WER {raw_errors.rate:.3f} -> {styled_errors.rate:.3f}; "
          f"sentence starts capitalised {styled_score.starts_capitalised}/{styled_score.sentence_starts}; "
          f"other words capitalised {styled_score.inner_capitalised}/{styled_score.inner_words}")
    assert started >= 0.5
