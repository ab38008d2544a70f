"""Every upload format the issue names decodes to the recording it holds, at 16 kHz mono float32.

Each test runs once per format of ``VARIANT_NAMES`` (tests/audio/conftest.py): one real Asterisk
prompt encoded as PCM WAV at 8/16/44.1/48 kHz, μ-law and A-law WAV, GSM WAV (wav49), raw .gsm,
MP3 mono and duplicated-stereo, Ogg and WebM Opus, FLAC and M4A/AAC.
"""

from __future__ import annotations

import numpy as np
import pytest

from callpipe_asr.audio import TARGET_SAMPLE_RATE_HZ, AudioLimits, decode_audio, probe_audio
from callpipe_asr.transcript import ChannelMode

LOSSLESS_DURATION_TOLERANCE_S = 0.01
LOSSY_DURATION_TOLERANCE_S = 0.1
"""Codec frames pad the end (AAC 1024 samples, GSM 160, MP3 576 at 8 kHz): at most a few frames."""
MIN_WAVEFORM_CORRELATION = 0.999
MIN_ENVELOPE_CORRELATION = 0.97
"""Valid decodes score 0.998 or more; a different prompt 0.32, the same prompt at twice or half
the speed 0.03, byte-swapped PCM 0.57 (see test_the_comparisons_tell_other_signals_apart)."""
MAX_LEVEL_DIFFERENCE_DB = 1.0


def test_decodes_to_16k_mono_float32_of_the_source_duration(variant, source, default_limits):
    decoded = decode_audio(variant.data, None, default_limits, ChannelMode.MIX)

    assert decoded.sample_rate_hz == TARGET_SAMPLE_RATE_HZ == 16_000
    assert len(decoded.channels) == 1
    samples = decoded.channels[0]
    assert isinstance(samples, np.ndarray) and samples.dtype == np.float32 and samples.ndim == 1
    assert decoded.duration == pytest.approx(len(samples) / 16_000)
    tolerance = LOSSLESS_DURATION_TOLERANCE_S if variant.waveform else LOSSY_DURATION_TOLERANCE_S
    assert decoded.duration == pytest.approx(source.duration, abs=tolerance)
    assert np.isfinite(samples).all()
    assert float(np.abs(samples).max()) <= 1.0
    assert float(np.abs(samples).max()) > 0.3, "the speech is missing or attenuated"


def test_reports_what_it_found_in_the_bytes(variant, default_limits):
    decoded = decode_audio(variant.data, None, default_limits, ChannelMode.MIX)

    assert decoded.source_format == variant.format
    assert decoded.source_codec == variant.codec
    assert decoded.source_sample_rate_hz == variant.sample_rate_hz
    assert decoded.source_channels == variant.channels


def test_decoded_signal_is_the_recording(variant, source, default_limits, kit):
    samples = decode_audio(variant.data, None, default_limits, ChannelMode.MIX).channels[0]
    reference = source.reference

    if variant.waveform:  # PCM at any rate, G.711, FLAC: sample for sample, in time
        correlation, lag = kit.waveform_match(samples, reference)
        assert correlation >= MIN_WAVEFORM_CORRELATION, f"{variant.name}: waveform correlation {correlation:.4f}"
        assert abs(lag) <= 1, f"{variant.name}: shifted by {lag} samples"
    correlation, lag = kit.envelope_match(samples, reference)
    assert correlation >= MIN_ENVELOPE_CORRELATION, f"{variant.name}: envelope correlation {correlation:.4f}"
    assert abs(lag) <= 1, f"{variant.name}: shifted by {lag} frames of 20 ms"
    level = kit.rms_db(samples[: len(reference)]) - kit.rms_db(reference)
    assert abs(level) <= MAX_LEVEL_DIFFERENCE_DB, f"{variant.name}: level off by {level:+.1f} dB"


def test_probe_reports_format_channels_and_duration(variant, source, default_limits):
    info = probe_audio(variant.data, None, default_limits)

    assert info.format == variant.format
    assert info.codec == variant.codec
    assert info.sample_rate_hz == variant.sample_rate_hz
    assert info.channels == variant.channels
    assert info.duration == pytest.approx(source.duration, abs=LOSSY_DURATION_TOLERANCE_S)


def test_probe_and_decode_agree_on_the_duration(variant, default_limits):
    info = probe_audio(variant.data, None, default_limits)
    decoded = decode_audio(variant.data, None, default_limits)

    assert decoded.duration == pytest.approx(info.duration, abs=LOSSY_DURATION_TOLERANCE_S)


def test_the_comparisons_tell_other_signals_apart(source, kit):
    """The thresholds above mean something: what a broken decoder would produce fails them."""
    reference = source.reference
    byte_swapped = np.frombuffer(np.round(reference * 32767).astype("<i2").tobytes(), dtype=">i2") / 32768.0
    wrong = {
        "another prompt": source.other_reference,
        "twice the speed": reference[::2],
        "half the speed": np.repeat(reference, 2),
        "byte-swapped PCM": byte_swapped.astype(np.float32),
        "noise": np.random.default_rng(7).normal(0, 0.1, len(reference)).astype(np.float32),
        "200 ms late": np.concatenate([np.zeros(3200, dtype=np.float32), reference]),
    }
    for what, signal in wrong.items():
        envelope, _ = kit.envelope_match(signal, reference)
        waveform, _ = kit.waveform_match(signal, reference)
        assert envelope < MIN_ENVELOPE_CORRELATION - 0.2, f"{what}: envelope correlation {envelope:.3f}"
        assert waveform < 0.5, f"{what}: waveform correlation {waveform:.3f}"


def test_decodes_under_a_tight_duration_limit(variant, source):
    """A limit just above the recording's length lets it through (the limit counts seconds, not
    resampled or padded samples)."""
    limits = AudioLimits(max_duration_seconds=source.duration + 0.2, max_channels=2)

    assert probe_audio(variant.data, None, limits).duration <= limits.max_duration_seconds
    assert decode_audio(variant.data, None, limits).duration <= limits.max_duration_seconds
