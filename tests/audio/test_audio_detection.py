"""The format is found from the bytes; headerless audio is read as the client's hints declare.

``decode_audio`` and ``probe_audio`` take bytes only, never a file name or Content-Type, so what
a client declares can only reach them as :class:`AudioHints`: without an encoding those hints
must not override what the bytes say. Raw GSM, which has no header, is found by
``sniff_raw_format``, which must not claim anything else.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from callpipe_asr.audio import decode_audio, probe_audio
from callpipe_asr.audio.decode import GSM_FRAME_BYTES, sniff_raw_format
from callpipe_asr.transcript import AudioHints, ChannelMode

MIN_WAVEFORM_CORRELATION = 0.999


@pytest.mark.parametrize(
    "hints",
    [
        AudioHints(encoding=None, sample_rate_hz=48_000, channels=2),  # a dialect's guess from the request
        AudioHints(encoding=None, sample_rate_hz=8_000, channels=None),
        AudioHints(),
    ],
    ids=["wrong-rate-and-channels", "rate-only", "empty"],
)
def test_hints_without_an_encoding_do_not_override_the_container(variants, default_limits, hints):
    for name in ("mp3-mono", "wav-mulaw", "ogg-opus", "raw-gsm", "m4a-aac"):
        variant = variants[name]
        decoded = decode_audio(variant.data, hints, default_limits)
        info = probe_audio(variant.data, hints, default_limits)

        assert (decoded.source_format, decoded.source_codec) == (variant.format, variant.codec), name
        assert decoded.source_sample_rate_hz == info.sample_rate_hz == variant.sample_rate_hz, name
        assert decoded.source_channels == info.channels == variant.channels, name


def test_mp3_with_an_id3_tag_in_front_is_still_mp3(variants, source, default_limits, kit):
    """Voicemail systems tag their MP3s: an ID3v2 header (10 bytes + frames) precedes the audio."""
    title = b"\x03Voicemail from 1001"
    frame = b"TIT2" + len(title).to_bytes(4, "big") + b"\x00\x00" + title
    tag = b"ID3\x03\x00\x00" + _synchsafe(len(frame)) + frame
    decoded = decode_audio(tag + variants["mp3-mono"].data, None, default_limits)

    assert (decoded.source_format, decoded.source_codec) == ("mp3", "mp3float")
    assert decoded.duration == pytest.approx(source.duration, abs=0.1)
    assert kit.envelope_match(decoded.channels[0], source.reference)[0] > 0.97


def _synchsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


# --- raw GSM sniffing ----------------------------------------------------------------------------


def test_sniffs_asterisks_raw_gsm(variants):
    data = variants["raw-gsm"].data

    assert len(data) % GSM_FRAME_BYTES == 0
    assert sniff_raw_format(data) == "gsm"


def test_sniffs_nothing_in_formats_that_have_a_header(variants):
    for name, variant in variants.items():
        if name != "raw-gsm":
            assert sniff_raw_format(variant.data) is None, name


def test_sniffs_nothing_in_other_data_of_whole_gsm_frames(source, kit):
    """Data whose length happens to be whole 33-byte frames is not GSM without the frame magic."""
    rng = random.Random(20240501)
    mulaw = kit.pyav_encode(source.samples[np.newaxis], 8000, "mulaw", "pcm_mulaw")
    candidates = {
        "raw s16le speech": _whole_frames(kit.to_s16le(source.samples)),
        "raw mu-law speech": _whole_frames(mulaw),
        "text": _whole_frames(b"That agent is already logged on. " * 200),
        "zeros": bytes(33 * 100),
        "random": rng.randbytes(33 * 100),
        "random, GSM magic on the first frame only": bytes([0xD8]) + rng.randbytes(33 * 20 - 1),
    }
    for what, data in candidates.items():
        assert data and len(data) % GSM_FRAME_BYTES == 0, what
        assert sniff_raw_format(data) is None, what


def _whole_frames(data: bytes) -> bytes:
    return data[: len(data) // GSM_FRAME_BYTES * GSM_FRAME_BYTES]


def test_sniffs_nothing_in_empty_or_partial_frames(variants):
    gsm = variants["raw-gsm"].data

    assert sniff_raw_format(b"") is None
    assert sniff_raw_format(gsm[:-1]) is None
    assert sniff_raw_format(gsm[:32]) is None


# --- raw headerless audio declared by hints ------------------------------------------------------


def test_raw_s16le_at_8k(source, default_limits, kit):
    decoded = decode_audio(kit.to_s16le(source.samples), AudioHints("s16le", 8000, 1), default_limits)

    _assert_is_source(decoded, source, kit, fmt="s16le", codec="pcm_s16le", rate=8000)


def test_raw_s16le_without_a_channel_count_is_mono(source, default_limits, kit):
    decoded = decode_audio(kit.to_s16le(source.samples), AudioHints("s16le", 8000), default_limits)

    _assert_is_source(decoded, source, kit, fmt="s16le", codec="pcm_s16le", rate=8000)


@pytest.mark.parametrize("encoding, codec", [("mulaw", "pcm_mulaw"), ("alaw", "pcm_alaw")])
def test_raw_g711_at_8k(source, default_limits, kit, encoding, codec):
    """Watson's ``audio/mulaw;rate=8000`` and its A-law sibling: headerless G.711."""
    data = kit.pyav_encode(source.samples[np.newaxis], 8000, encoding, codec)
    assert len(data) == len(source.samples)  # one byte a sample, nothing else

    decoded = decode_audio(data, AudioHints(encoding, 8000, 1), default_limits)

    _assert_is_source(decoded, source, kit, fmt=encoding, codec=codec, rate=8000)


def test_raw_s16be_and_f32le(source, default_limits, kit):
    big_endian = np.clip(np.round(source.samples * 32768), -32768, 32767).astype(">i2").tobytes()
    float32 = source.reference.astype("<f4").tobytes()

    _assert_is_source(decode_audio(big_endian, AudioHints("s16be", 8000, 1), default_limits), source, kit,
                      fmt="s16be", codec="pcm_s16be", rate=8000)
    _assert_is_source(decode_audio(float32, AudioHints("f32le", 16_000, 1), default_limits), source, kit,
                      fmt="f32le", codec="pcm_f32le", rate=16_000)


def test_raw_stereo_keeps_the_parties_apart(two_party, source, default_limits, kit):
    data = kit.to_s16le(two_party)  # interleaved L R L R
    hints = AudioHints("s16le", 8000, 2)

    separate = decode_audio(data, hints, default_limits, ChannelMode.SEPARATE)
    auto = decode_audio(data, hints, default_limits, ChannelMode.AUTO)
    mixed = decode_audio(data, hints, default_limits, ChannelMode.MIX)

    assert separate.source_channels == 2 and len(separate.channels) == 2 and len(auto.channels) == 2
    assert len(mixed.channels) == 1
    for channel, reference in zip(separate.channels, (source.reference, source.other_reference)):
        assert kit.waveform_match(channel, reference)[0] >= MIN_WAVEFORM_CORRELATION
    assert probe_audio(data, hints, default_limits).channels == 2


def test_raw_float_stereo_at_16k_comes_through_sample_exact(source, default_limits, kit):
    """Already 16 kHz float: nothing to convert, so each channel is exactly what was sent."""
    length = max(len(source.reference), len(source.other_reference))
    stereo = np.stack([kit.pad_to(source.reference, length), kit.pad_to(source.other_reference, length)])

    decoded = decode_audio(stereo.T.astype("<f4").tobytes(), AudioHints("f32le", 16_000, 2), default_limits,
                           ChannelMode.SEPARATE)

    assert len(decoded.channels) == 2
    for samples, sent in zip(decoded.channels, stereo):
        np.testing.assert_array_equal(samples, sent)


def test_the_hinted_rate_is_what_the_bytes_are_read_at(source, default_limits, kit):
    """The same raw bytes declared at 16 kHz last half as long: the hint is obeyed, not guessed."""
    data = kit.to_s16le(source.samples)

    at_8k = decode_audio(data, AudioHints("s16le", 8000, 1), default_limits)
    at_16k = decode_audio(data, AudioHints("s16le", 16_000, 1), default_limits)

    assert at_16k.duration == pytest.approx(at_8k.duration / 2, abs=0.01)
    assert at_16k.source_sample_rate_hz == 16_000


def _assert_is_source(decoded, source, kit, *, fmt: str, codec: str, rate: int) -> None:
    assert (decoded.source_format, decoded.source_codec, decoded.source_sample_rate_hz) == (fmt, codec, rate)
    assert decoded.source_channels == 1 and len(decoded.channels) == 1
    samples = decoded.channels[0]
    assert samples.dtype == np.float32 and decoded.sample_rate_hz == 16_000
    assert decoded.duration == pytest.approx(source.duration, abs=0.01)
    correlation, lag = kit.waveform_match(samples, source.reference)
    assert correlation >= MIN_WAVEFORM_CORRELATION and abs(lag) <= 1, (correlation, lag)
