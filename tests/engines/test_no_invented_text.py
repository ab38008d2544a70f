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
from callpipe_asr.audio import AudioLimits, decode_audio
from callpipe_asr.engines import ModelRegistry
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.settings import Settings, load_settings
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
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(None, environ={}, overrides={"data_dir": tmp_path_factory.mktemp("asr-data")})


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Iterator[ModelRegistry]:
    if not MOH_DIR.exists():
        pytest.fail("asterisk-moh-opsound-wav is missing: run ./scripts/setup --test")
    registry = ModelRegistry(settings, concurrency=1)
    registry.get(settings.default_model)
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def recognizer(settings: Settings, registry: ModelRegistry) -> Recognizer:
    return Recognizer(settings, registry)


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


RUNNING = ("vm-review", "vm-tocallback", "vm-toforward", "vm-tooshort", "vm-torerecord", "vm-tempgreeting2",
           "vm-undelete", "vm-whichbox", "vm-unknown-caller", "vm-savemessage", "vm-tocancelmsg", "vm-tohearenv",
           "vm-tomakecall", "vm-toreply")
"""Prompts read one after another with pauses shorter than the VAD's silence limit: one speech
region of nearly a minute, which text-only decoding must cut into windows inside."""


def text_only(recognizer: Recognizer, path: Path) -> Transcript:
    """As the voicemail Lua and FusionPBX ask: neither words nor segment times."""
    options = RecognitionOptions(word_timestamps=False, segment_timestamps=False)
    return recognizer.recognize(path.read_bytes(), None, options, job_id=path.stem)


def test_text_only_decoding_of_running_speech_loses_and_repeats_nothing(
    recognizer: Recognizer, registry: ModelRegistry, settings: Settings, by_name: dict[str, Prompt], tmp_path: Path
) -> None:
    """Longer than two windows without a pause the VAD would split at: the windows are cut in the
    short pauses between sentences, so no word is garbled, lost or heard twice at a cut."""
    made = compose([by_name[n] for n in RUNNING], [0.4, 0.7, 0.5, 0.9] * 3 + [0.6, 1.0], "silence", seed=5)
    assert made.speech_end > 50, made.speech_end
    path = write(tmp_path, "running", made.samples)
    with registry.use(settings.default_model) as engine:
        decoded = decode_audio(path.read_bytes(), None, AudioLimits(600, 2))
        regions = engine.speech_regions(decoded.channels[0])
    assert any(r["end"] - r["start"] > 30 * 16_000 for r in regions), [(r["start"] / 16_000, r["end"] / 16_000) for r in regions]

    fast, timed = text_only(recognizer, path), recognize(recognizer, path)

    fast_score, timed_score = score(as_recording("fast", made), fast), score(as_recording("timed", made), timed)
    assert fast_score.errors.rate <= MAX_WER, fast.text
    assert fast_score.errors.rate <= timed_score.errors.rate + 0.03, (fast.text, timed.text)
    assert len(fast.segments) >= 2  # one per window: more than 50 s of speech
    assert all(s.words == () for s in fast.segments)
    assert all(0 <= s.start < s.end <= fast.duration for s in fast.segments)
    assert all(a.end <= b.start for a, b in zip(fast.segments, fast.segments[1:]))


def test_text_only_decoding_keeps_pauses_out_and_silence_empty(
    recognizer: Recognizer, by_name: dict[str, Prompt], tmp_path: Path
) -> None:
    """The long voicemail with long pauses, text only: the same words, segments only where speech
    was, nothing after it; music on hold alone is still empty."""
    made = compose([by_name[n] for n in LONG], LONG_PAUSES, "moh", seed=11)
    transcript = text_only(recognizer, write(tmp_path, "long", made.samples))

    assert score(as_recording("long", made), transcript).errors.rate <= MAX_WER, transcript.text
    assert transcript.segments[-1].end <= made.speech_end + 1.0
    assert len(transcript.segments) >= 2  # more than 30 s of speech: the windows meet at a pause
    for segment in transcript.segments:  # each starts where a sentence does, not in a removed pause
        assert any(s.start - 1.0 <= segment.start <= s.start + 0.5 for s in made.sentences), (
            segment, [(s.start, s.end) for s in made.sentences])
    assert text_only(recognizer, MOH_DIR / "manolo_camp-morning_coffee.wav").is_empty

