"""Channels: the two parties of a recorded call stay apart when asked, duplicated mono is mixed,
and every channel count up to the limit decodes with each channel where it was."""

from __future__ import annotations

import numpy as np
import pytest

from callpipe_asr.audio import AudioLimits, decode_audio, probe_audio
from callpipe_asr.errors import AudioError, TooManyChannels
from callpipe_asr.transcript import ChannelMode

MIN_WAVEFORM_CORRELATION = 0.999
MIN_ENVELOPE_CORRELATION = 0.97
MANY_PROMPTS = (
    "agent-alreadyon", "vm-intro", "agent-incorrect", "conf-getconfno", "agent-pass",
    "conf-invalid", "agent-newlocation", "conf-getpin", "conf-full", "agent-loginok",
    "conf-locked", "conf-kicked",
)
"""Twelve different recordings, one per channel of the many-channel files."""


def _assert_matches(kit, decoded: np.ndarray, reference: np.ndarray, waveform: bool, what: str) -> None:
    if waveform:
        correlation, _ = kit.waveform_match(decoded, kit.pad_to(reference, len(decoded)))
        assert correlation >= MIN_WAVEFORM_CORRELATION, f"{what}: waveform correlation {correlation:.4f}"
    correlation, _ = kit.envelope_match(decoded, kit.pad_to(reference, len(decoded)))
    assert correlation >= MIN_ENVELOPE_CORRELATION, f"{what}: envelope correlation {correlation:.4f}"


@pytest.mark.parametrize("mode", [ChannelMode.AUTO, ChannelMode.SEPARATE])
def test_two_parties_come_out_apart_and_in_order(two_party_variant, source, default_limits, kit, mode):
    decoded = decode_audio(two_party_variant.data, None, default_limits, mode)

    assert decoded.source_channels == 2
    assert len(decoded.channels) == 2
    first, second = decoded.channels
    assert first.dtype == second.dtype == np.float32 and len(first) == len(second)
    name = two_party_variant.name
    _assert_matches(kit, first, source.reference, two_party_variant.waveform, f"{name} channel 0")
    _assert_matches(kit, second, source.other_reference, two_party_variant.waveform, f"{name} channel 1")
    # and not the other way round
    assert kit.envelope_match(first, kit.pad_to(source.other_reference, len(first)))[0] < 0.6


def test_two_parties_mixed_on_request(two_party_variant, source, default_limits, kit):
    decoded = decode_audio(two_party_variant.data, None, default_limits, ChannelMode.MIX)

    assert decoded.source_channels == 2
    assert len(decoded.channels) == 1
    mixed = decoded.channels[0]
    length = len(mixed)
    expected = (kit.pad_to(source.reference, length) + kit.pad_to(source.other_reference, length)) / 2
    _assert_matches(kit, mixed, expected, two_party_variant.waveform, f"{two_party_variant.name} mix")
    assert float(np.abs(mixed).max()) <= 1.0


def test_probe_counts_both_channels(two_party_variant, default_limits):
    assert probe_audio(two_party_variant.data, None, default_limits).channels == 2


def test_identical_channels_are_one_signal_in_auto(source, default_limits, kit):
    stereo = kit.write_wav_pcm(np.stack([source.samples, source.samples]), 8000)

    auto = decode_audio(stereo, None, default_limits, ChannelMode.AUTO)
    separate = decode_audio(stereo, None, default_limits, ChannelMode.SEPARATE)
    mono = decode_audio(source.path.read_bytes(), None, default_limits, ChannelMode.AUTO)

    assert auto.source_channels == 2 and len(auto.channels) == 1
    np.testing.assert_allclose(auto.channels[0], mono.channels[0], atol=1e-6)
    assert len(separate.channels) == 2
    np.testing.assert_array_equal(separate.channels[0], separate.channels[1])


def test_fusionpbx_duplicated_mono_mp3_is_one_signal_in_auto(variants, source, default_limits, kit):
    """FusionPBX converts mono voicemail to a stereo MP3 by duplicating it: one party, not two."""
    variant = variants["mp3-stereo-dup"]
    assert variant.channels == 2

    auto = decode_audio(variant.data, None, default_limits, ChannelMode.AUTO)
    separate = decode_audio(variant.data, None, default_limits, ChannelMode.SEPARATE)

    assert auto.source_channels == 2 and auto.source_codec == "mp3float"
    assert len(auto.channels) == 1
    _assert_matches(kit, auto.channels[0], source.reference, False, "duplicated mp3")
    assert len(separate.channels) == 2


def test_a_silent_second_party_is_still_a_second_channel(source, default_limits, kit):
    """A call where the far end never spoke: AUTO keeps the channels apart (they differ)."""
    stereo = kit.write_wav_pcm(np.stack([source.samples, np.zeros_like(source.samples)]), 8000)

    decoded = decode_audio(stereo, None, default_limits, ChannelMode.AUTO)

    assert len(decoded.channels) == 2
    assert float(np.abs(decoded.channels[1]).max()) == 0.0
    _assert_matches(kit, decoded.channels[0], source.reference, True, "speaking party")


@pytest.fixture(scope="module")
def many_recordings(prompts, kit) -> tuple[np.ndarray, list[np.ndarray]]:
    """(12, n) at 8 kHz of twelve different prompts, and each prompt's sox 16 kHz reference."""
    paths = [prompts[name].path for name in MANY_PROMPTS]
    samples = [kit.read_wav_pcm(path)[0][0] for path in paths]
    length = max(len(s) for s in samples)
    return np.stack([kit.pad_to(s, length) for s in samples]), [kit.sox_resample(path, 16_000) for path in paths]


@pytest.mark.parametrize("channels", [3, 4, 6, 8, 9, 12])
def test_every_channel_count_up_to_the_limit_keeps_each_channel(many_recordings, kit, channels):
    """3 to 8 channels have FFmpeg default layouts (2.1 ... 7.1), 9 has none, 12 is 7.1.4: each
    channel must come out where it went in, never remixed into its neighbours. (8 is the default
    limit: an 8-channel file once crashed the process inside PyAV.)"""
    recordings, references = many_recordings
    data = kit.write_wav_pcm(recordings[:channels], 8000)
    limits = AudioLimits(max_duration_seconds=60, max_channels=channels)

    decoded = kit.within_seconds(20, lambda: decode_audio(data, None, limits, ChannelMode.SEPARATE))

    assert decoded.source_channels == channels == probe_audio(data, None, limits).channels
    assert len(decoded.channels) == channels
    for index, (samples, reference) in enumerate(zip(decoded.channels, references)):
        _assert_matches(kit, samples, reference, True, f"channel {index} of {channels}")
    mixed = decode_audio(data, None, limits, ChannelMode.MIX)
    assert len(mixed.channels) == 1


def test_more_channels_than_the_limit_are_refused_before_decoding(many_recordings, kit):
    recordings, _ = many_recordings
    data = kit.write_wav_pcm(recordings[:9], 8000)
    limits = AudioLimits(max_duration_seconds=60, max_channels=8)

    for call in (probe_audio, decode_audio):
        with pytest.raises(TooManyChannels) as caught:
            call(data, None, limits)
        assert isinstance(caught.value, AudioError)
        assert caught.value.status == 400
        assert "9 channels" in caught.value.message and "8" in caught.value.message
