"""End to end: the real model on real telephone audio writes no words that were not said.

The audio is built here from the Debian packages (real human prompts from
asterisk-core-sounds-en-wav, music on hold from asterisk-moh-opsound-wav) with the benchmark's
own composer and scorer (``bench.corpus``, ``bench.evaluate``), so the tests and
``bench/RESULTS.md`` judge the same way: a sentence is "kept" when its words are heard where the
reference puts it; a word starting more than a second after the speech ended is invented.
Behaviour only: no timings, and word error rates only as loose bounds against the references.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from bench import audio
from bench.corpus import Composite, Recording, compose
from bench.evaluate import score
from bench.sources import MOH_DIR, Prompt, speech_prompts
from callpipe_asr.engines import ModelRegistry
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.settings import load_settings
from callpipe_asr.transcript import RecognitionOptions, Transcript

pytestmark = pytest.mark.e2e

MAX_WER = 0.2
"""tiny.en on these prompts is near 0.05; a decoder, VAD or filter fault costs far more."""
SHORT = ("vm-intro", "vm-savefolder")
LONG = ("agent-alreadyon", "conf-getpin", "pbx-invalid", "privacy-unident", "vm-msgsaved", "vm-mismatch",
        "vm-rec-name", "conf-onlyperson", "vm-toforward")
LONG_PAUSES = (14.0, 9.0, 18.0, 12.0, 16.0, 10.0, 15.0, 13.0, 0.5)
"""Seconds after each sentence of the long voicemail: pauses longer than the VAD's silence limit,
so every sentence is a region of its own that the model hears joined to the others."""


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recognizer]:
    if not MOH_DIR.exists():
        pytest.fail("asterisk-moh-opsound-wav is missing: run ./scripts/setup --test")
    settings = load_settings(None, environ={}, overrides={"data_dir": tmp_path_factory.mktemp("asr-data")})
    registry = ModelRegistry(settings, concurrency=1)
    registry.get(settings.default_model)
    yield Recognizer(settings, registry)
    registry.close()


@pytest.fixture(scope="module")
def by_name() -> dict[str, Prompt]:
    return {prompt.name: prompt for prompt in speech_prompts()}


def recognize(recognizer: Recognizer, path: Path) -> Transcript:
    return recognizer.recognize(path.read_bytes(), None, RecognitionOptions(), job_id=path.stem)


def as_recording(name: str, made: Composite) -> Recording:
    return Recording(id=name, kind="voicemail", duration=len(made.samples) / audio.RATE_HZ, text=made.text,
                     sentences=made.sentences, speech_end=made.speech_end, tail="")


def write(directory: Path, name: str, samples: np.ndarray) -> Path:
    path = directory / f"{name}.wav"
    audio.write_wav(path, samples)
    return path


def test_music_on_hold_from_start_to_end_comes_back_empty(recognizer: Recognizer, tmp_path: Path) -> None:
    """A whole track (73 s) and a loud excerpt of another: the caller never spoke."""
    whole = MOH_DIR / "manolo_camp-morning_coffee.wav"
    loud = write(tmp_path, "moh-loud", audio.read_wav(MOH_DIR / "macroform-robot_dity.wav")[60 * 8000:100 * 8000])
    for path in (whole, loud):
        transcript = recognize(recognizer, path)
        assert transcript.is_empty, f"{path.name}: {transcript.text!r}"
        assert transcript.segments == ()


@pytest.mark.parametrize("tail", ["silence", "moh"])
def test_speech_then_15_seconds_of_silence_or_music_is_the_speech_and_nothing_after(
    recognizer: Recognizer, by_name: dict[str, Prompt], tmp_path: Path, tail: str
) -> None:
    made = compose([by_name[n] for n in SHORT], [1.5, 0.5], tail, seed=7)
    transcript = recognize(recognizer, write(tmp_path, f"speech-{tail}", made.samples))

    result = score(as_recording(tail, made), transcript)
    assert result.errors.rate <= MAX_WER, transcript.text
    assert result.words_after_speech == 0, [(w.text, w.start) for w in transcript.words]
    assert transcript.segments[-1].end <= made.speech_end + 1.0


def test_a_long_voicemail_with_long_pauses_keeps_every_sentence_in_place(
    recognizer: Recognizer, by_name: dict[str, Prompt], tmp_path: Path
) -> None:
    made = compose([by_name[n] for n in LONG], LONG_PAUSES, "moh", seed=11)
    seconds = len(made.samples) / audio.RATE_HZ
    assert 120 <= seconds <= 180, seconds
    transcript = recognize(recognizer, write(tmp_path, "long", made.samples))

    result = score(as_recording("long", made), transcript)
    assert result.sentences_present == len(LONG), transcript.text
    assert result.errors.rate <= MAX_WER, transcript.text
    assert result.words_after_speech == 0
    assert transcript.duration == pytest.approx(seconds, abs=0.05)


@pytest.mark.parametrize("codec", list(audio.CODECS))  # gsm: SoX's wav49 ends in a 1-byte packet (the RIFF pad byte)
def test_each_codec_decodes_and_transcribes_without_invented_text(
    recognizer: Recognizer, by_name: dict[str, Prompt], tmp_path: Path, codec: str
) -> None:
    made = compose([by_name["vm-rec-name"], by_name["vm-msgsaved"]], [1.2, 0.5], "moh", seed=3)
    master = write(tmp_path, "master", made.samples)
    encoded = tmp_path / f"variant.{audio.CODECS[codec][0]}"
    audio.encode_variant(master, codec, encoded)

    transcript = recognize(recognizer, encoded)

    result = score(as_recording(codec, made), transcript)
    assert result.errors.rate <= MAX_WER, transcript.text
    assert result.sentences_present == 2, transcript.text
    assert result.words_after_speech == 0, transcript.text
