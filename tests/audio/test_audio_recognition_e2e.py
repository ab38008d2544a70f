"""End to end: the real model (the bundled Whisper tiny.en) hears the prompt through every codec.

A decoder that returns plausible-looking but wrong samples (wrong rate, wrong channel, a codec's
bytes misread) still passes many signal checks; a word error rate against the prompt's reference
text does not. The model is loaded once for the session.
"""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from callpipe_asr.engines import ModelRegistry
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.settings import load_settings
from callpipe_asr.transcript import ChannelMode, RecognitionOptions

pytestmark = pytest.mark.e2e

CODECS = (
    "wav-pcm-8k", "wav-mulaw", "wav-alaw", "wav-gsm", "raw-gsm", "mp3-stereo-dup", "ogg-opus", "webm-opus", "flac",
    "m4a-aac",
)
"""One variant per codec and container. The MP3 is FusionPBX's duplicated stereo, which must come
out as one transcript (not the same words twice); the rate variants differ only before the
resampler, which the signal tests cover."""
MAX_WER = 0.35
TELEPHONE_CODECS = ("wav-mulaw", "wav-alaw", "wav-gsm", "raw-gsm")
MAX_WER_ABOVE_PCM = 0.15
"""G.711 and GSM lose little speech: within this of what the same words in 16-bit PCM score."""


@pytest.fixture(scope="session")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recognizer]:
    settings = load_settings(None, environ={}, overrides={"data_dir": tmp_path_factory.mktemp("asr-data")})
    registry = ModelRegistry(settings, concurrency=1)
    registry.get(settings.default_model)  # load once, up front
    yield Recognizer(settings, registry)
    registry.close()


def _spoken(reference: str) -> str:
    """A reference text without its stage directions ("(simple tone sound plays)")."""
    return re.sub(r"\([^)]*\)", " ", reference)


def test_every_codec_is_recognised(recognizer, variants, prompts, source, word_error_rate):
    reference = prompts["agent-alreadyon"].text
    options = RecognitionOptions(word_timestamps=False, channel_mode=ChannelMode.AUTO)
    rates: dict[str, float] = {}
    texts: dict[str, str] = {}
    for name in CODECS:
        transcript = recognizer.recognize(variants[name].data, None, options, job_id=f"e2e-{name}")
        texts[name] = transcript.text
        rates[name] = word_error_rate(reference, transcript.text)
        assert transcript.duration == pytest.approx(source.duration, abs=0.1), name
        assert transcript.channels == 1, name
        assert all(segment.channel is None for segment in transcript.segments), name

    report = "\n".join(f"{name}: WER {rates[name]:.2f} {texts[name]!r}" for name in CODECS)
    assert all(rate <= MAX_WER for rate in rates.values()), report
    for name in TELEPHONE_CODECS:
        assert rates[name] <= rates["wav-pcm-8k"] + MAX_WER_ABOVE_PCM, report


def test_a_two_party_call_is_recognised_per_channel(recognizer, two_party_variants, prompts, word_error_rate):
    options = RecognitionOptions(word_timestamps=False, channel_mode=ChannelMode.AUTO)

    transcript = recognizer.recognize(two_party_variants["wav-pcm"].data, None, options, job_id="e2e-two-party")

    assert transcript.channels == 2
    by_channel = {
        channel: " ".join(s.text for s in transcript.segments if s.channel == channel) for channel in (0, 1)
    }
    assert word_error_rate(prompts["agent-alreadyon"].text, by_channel[0]) <= MAX_WER, transcript.text
    assert word_error_rate(_spoken(prompts["vm-intro"].text), by_channel[1]) <= MAX_WER, transcript.text
