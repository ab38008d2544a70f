"""Decode any telephone or web recording to 16 kHz float32 through FFmpeg's decoders (PyAV).

PyAV is what faster-whisper itself decodes with: FFmpeg in-process, no ``ffmpeg`` binary and no
process per file. The container is found from the bytes (FFmpeg's probe, plus a sniffer for raw
GSM, which has no header); a file name or Content-Type is never trusted. Dialects that carry
headerless audio (Watson's ``audio/mulaw;rate=8000``) pass :class:`AudioHints`.

Two entry points: :func:`probe_audio` is the cheap check a request runs before its job is
accepted (format, channels, duration: limits enforced before any real work), and
:func:`decode_audio` is the full decode a worker runs.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

import av
import numpy as np

from ..errors import AudioTooLong, CorruptAudio, EmptyAudio, TooManyChannels, UnsupportedAudio
from ..transcript import AudioHints, ChannelMode, DecodedAudio

log = logging.getLogger(__name__)

TARGET_SAMPLE_RATE_HZ = 16_000
GSM_FRAME_BYTES = 33
"""A raw GSM 06.10 frame: 33 bytes, 160 samples at 8 kHz, each starting with the nibble 0xD."""
RAW_ENCODINGS = {"s16le": "s16le", "s16be": "s16be", "mulaw": "mulaw", "alaw": "alaw", "f32le": "f32le", "u8": "u8"}
"""Our hint encodings -> FFmpeg raw demuxer names."""
MAX_SAMPLE_RATE_HZ = 768_000
"""Hertz; no recording has more. A damaged header's absurd rate (hundreds of MHz) costs FFmpeg's
resampler seconds and hundreds of MB to set up, or fails it outright."""
WAV_PACKET_BYTES = 65_536
"""Bytes per packet FFmpeg's WAV demuxer reads from a PCM WAV (its default gave 512-sample packets
of 8 kHz audio: each one a decode, a resample and an array of its own). 64 KiB made decoding a
PCM voicemail about 40 % faster, with the same samples."""
IDENTICAL_CHANNEL_TOLERANCE = 1e-3
"""Mean absolute difference (full scale 1.0) under which two channels count as the same signal."""


@dataclass(frozen=True)
class AudioLimits:
    max_duration_seconds: float
    max_channels: int


@dataclass(frozen=True)
class AudioInfo:
    """What a probe learned about a recording without decoding all of it."""

    format: str
    codec: str
    sample_rate_hz: int
    channels: int
    duration: float
    """Seconds (from the header, or from the packets where the header has none)."""


def probe_audio(data: bytes, hints: AudioHints | None, limits: AudioLimits) -> AudioInfo:
    """Check that ``data`` is audio within the limits; raise an :class:`AudioError` naming the problem."""
    with _open(data, hints) as container:
        stream = _audio_stream(container)
        channels = _channel_count(stream)
        _check_channels(channels, limits)
        duration = _declared_duration(container, stream)
        if duration is None:
            duration = _duration_from_packets(container, stream)
        if duration > limits.max_duration_seconds:
            raise AudioTooLong(_too_long_message(duration, limits))
        if not _decodes_something(container, stream):
            raise EmptyAudio("the audio contains no samples")
        return AudioInfo(
            format=container.format.name,
            codec=stream.codec_context.name,
            sample_rate_hz=stream.codec_context.sample_rate,
            channels=channels,
            duration=duration,
        )


def decode_audio(
    data: bytes,
    hints: AudioHints | None,
    limits: AudioLimits,
    channel_mode: ChannelMode = ChannelMode.MIX,
) -> DecodedAudio:
    """Decode to 16 kHz float32: one array per channel read apart, or one mixed array."""
    with _open_for_decoding(data, hints) as container:
        stream = _audio_stream(container)
        channels = _channel_count(stream)
        _check_channels(channels, limits)
        samples = _decode_resampled(container, stream, channels, limits)
        codec = stream.codec_context.name
        source_rate = stream.codec_context.sample_rate
        fmt = container.format.name
    if samples.shape[1] == 0:
        raise EmptyAudio("the audio contains no samples")
    per_channel = _choose_channels(samples, channel_mode)
    return DecodedAudio(
        channels=per_channel,
        sample_rate_hz=TARGET_SAMPLE_RATE_HZ,
        duration=samples.shape[1] / TARGET_SAMPLE_RATE_HZ,
        source_channels=channels,
        source_sample_rate_hz=source_rate,
        source_format=fmt,
        source_codec=codec,
    )


def sniff_raw_format(data: bytes) -> str | None:
    """Name the FFmpeg demuxer for headerless formats FFmpeg's probe cannot recognise.

    Only raw GSM (Asterisk's ``.gsm`` voicemail) so far: a whole number of 33-byte frames, each
    opening with the GSM magic nibble. Everything with a header is left to FFmpeg's probe.
    """
    if data and len(data) % GSM_FRAME_BYTES == 0:
        if all(data[i] >> 4 == 0xD for i in range(0, len(data), GSM_FRAME_BYTES)):
            return "gsm"
    return None


def _open_for_decoding(data: bytes, hints: AudioHints | None) -> Any:
    """:func:`_open`, with a PCM WAV opened again to be read in :data:`WAV_PACKET_BYTES` packets.

    Only PCM (``pcm_*``: linear, μ-law, A-law): its samples are independent of the packets. Block
    codecs (GSM, ADPCM) keep FFmpeg's packets, whose decoders check each packet's headers: in one
    large packet a damaged block in the middle went unnoticed (the ADPCM upload page test)."""
    container = _open(data, hints)
    try:
        plain_wav = container.format.name == "wav" and hints is None
        context = container.streams.audio[0].codec_context if container.streams.audio else None
        codec = context.name if context is not None else ""  # None: a codec FFmpeg does not know
    except Exception:
        container.close()
        raise
    if not (plain_wav and codec.startswith("pcm_")):
        return container
    container.close()
    return _open(data, hints, {"max_size": str(WAV_PACKET_BYTES)})


def _open(data: bytes, hints: AudioHints | None, demuxer_options: dict[str, str] | None = None) -> Any:
    if not data:
        raise EmptyAudio("the audio is empty (0 bytes)")
    fmt: str | None = None
    options: dict[str, str] = {}
    if hints is not None and hints.encoding:
        if hints.encoding not in RAW_ENCODINGS:
            raise UnsupportedAudio(f"unsupported raw audio encoding '{hints.encoding}'")
        if not hints.sample_rate_hz:
            raise UnsupportedAudio(f"raw '{hints.encoding}' audio needs a sample rate")
        fmt = RAW_ENCODINGS[hints.encoding]
        options = {"sample_rate": str(hints.sample_rate_hz), "ch_layout": f"{hints.channels or 1}c"}
    else:
        fmt = sniff_raw_format(data)
        options = dict(demuxer_options or {})
    try:
        return av.open(io.BytesIO(data), mode="r", format=fmt, options=options)
    except av.FFmpegError as exc:
        raise UnsupportedAudio(f"not a recognised audio format ({_ffmpeg_reason(exc)})") from exc
    except (ValueError, OSError) as exc:
        raise UnsupportedAudio(f"not a recognised audio format ({exc})") from exc


def _audio_stream(container: Any) -> Any:
    if not container.streams.audio:
        raise UnsupportedAudio(f"the file ({container.format.name}) has no audio stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # PyAV opens no context for a codec FFmpeg cannot decode
        raise UnsupportedAudio(f"the file ({container.format.name}) uses an audio codec that cannot be decoded")
    if not stream.codec_context.sample_rate:
        raise CorruptAudio("the audio stream declares no sample rate")
    if stream.codec_context.sample_rate > MAX_SAMPLE_RATE_HZ:
        raise CorruptAudio(f"the audio declares an implausible sample rate ({stream.codec_context.sample_rate} Hz)")
    return stream


def _channel_count(stream: Any) -> int:
    return int(stream.codec_context.channels or 1)


def _check_channels(channels: int, limits: AudioLimits) -> None:
    if channels > limits.max_channels:
        raise TooManyChannels(f"the audio has {channels} channels; at most {limits.max_channels} are accepted")


def _too_long_message(duration: float, limits: AudioLimits) -> str:
    return f"the audio lasts {duration:.0f} s; at most {limits.max_duration_seconds:.0f} s is accepted"


def _declared_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(Fraction(container.duration, av.time_base))
    return None


def _duration_from_packets(container: Any, stream: Any) -> float:
    total = Fraction(0)
    try:
        for packet in container.demux(stream):
            if packet.duration and packet.time_base:
                total += packet.duration * packet.time_base
        container.seek(0)  # a damaged stream can refuse this too (EPERM; found by tests/fuzz)
    except av.FFmpegError as exc:
        raise CorruptAudio(f"the audio is damaged ({_ffmpeg_reason(exc)})") from exc
    return float(total)


def _decodes_something(container: Any, stream: Any) -> bool:
    """Decode until the first non-empty frame: proves the codec works on these bytes."""
    return any(frame.samples for frame in _frames(container, stream))


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    """Every decoded frame; a short last packet that the decoder refuses is left out.

    Recorders and converters leave a partial block at the end (SoX writes MS GSM "wav49" files
    whose data ends in a 1-byte packet, the RIFF pad byte; a voicemail cut off by a hang-up ends
    mid-block), and FFmpeg's decoders refuse such a packet outright: failing the whole file for
    it lost the recording. Only that case is forgiven: a refused packet that is the last one
    and shorter than the packets before it (a few milliseconds). A refused packet anywhere else
    is damage, and the file is :class:`CorruptAudio` as before.
    """
    refused: Exception | None = None
    largest = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream flush
                yield from packet.decode()
                continue
            if refused is not None:
                raise CorruptAudio(f"the audio cannot be decoded ({_ffmpeg_reason(refused)})") from refused
            try:
                frames = packet.decode()
            except av.InvalidDataError as exc:
                if packet.size >= largest:
                    raise CorruptAudio(f"the audio cannot be decoded ({_ffmpeg_reason(exc)})") from exc
                refused = exc
                continue
            largest = max(largest, packet.size)
            yield from frames
    except av.FFmpegError as exc:
        raise CorruptAudio(f"the audio cannot be decoded ({_ffmpeg_reason(exc)})") from exc
    if refused is not None:
        log.debug("left out a short last packet the decoder refused (%s)", _ffmpeg_reason(refused))


def _decode_resampled(container: Any, stream: Any, channels: int, limits: AudioLimits) -> np.ndarray:
    """All samples as a (channels, n) float32 array at 16 kHz, stopping at the duration limit.

    Packed float32 out: PyAV reads past the plane pointers of planar frames with 8 or more
    channels (a crash). A new resampler whenever the frames change rate, layout or sample format
    mid-stream: PyAV's resampler passes such frames through unconverted once its first frame
    needed no conversion (a 16 kHz stream that turns 44.1 kHz or stereo).
    """
    layout = _layout_name(channels)
    resampler: Any = None
    source: tuple[str, str, int] | None = None
    max_samples = int(limits.max_duration_seconds * TARGET_SAMPLE_RATE_HZ) + TARGET_SAMPLE_RATE_HZ
    chunks: list[np.ndarray] = []
    decoded = 0
    for frame in _frames(container, stream):
        frame.pts = None  # let the resampler count time itself; damaged files carry bad stamps
        params = (frame.format.name, frame.layout.name, frame.sample_rate)
        if params != source:
            if resampler is not None:
                chunks.extend(_to_array(out, channels) for out in resampler.resample(None))
            resampler = av.AudioResampler(format="flt", layout=layout, rate=TARGET_SAMPLE_RATE_HZ)
            source = params
        for out in resampler.resample(frame):
            chunk = _to_array(out, channels)
            chunks.append(chunk)
            decoded += chunk.shape[1]
        if decoded > max_samples:
            raise AudioTooLong(_too_long_message(decoded / TARGET_SAMPLE_RATE_HZ, limits))
    if resampler is not None:
        chunks.extend(_to_array(out, channels) for out in resampler.resample(None))
    if not chunks:
        return np.zeros((channels, 0), dtype=np.float32)
    samples = np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)
    # float sources (f32le, float WAV) may hold NaN, infinities or any magnitude: keep the promise
    # of finite samples in [-1, 1] (the model and the channel comparison need it)
    np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(samples, -1.0, 1.0, out=samples)


def _to_array(frame: Any, channels: int) -> np.ndarray:
    """A packed float32 frame as (channels, n)."""
    interleaved: np.ndarray = frame.to_ndarray()
    return interleaved.reshape(-1, channels).T


def _layout_name(channels: int) -> str:
    """FFmpeg's default layout for the count; counts it has none for (9, 11...) stay unordered."""
    named = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    try:
        av.AudioLayout(named)
    except ValueError:
        return f"{channels} channels"
    return named


def _choose_channels(samples: np.ndarray, mode: ChannelMode) -> tuple[np.ndarray, ...]:
    if samples.shape[0] == 1:
        return (samples[0],)
    if mode is ChannelMode.SEPARATE or (mode is ChannelMode.AUTO and not _channels_identical(samples)):
        return tuple(np.ascontiguousarray(channel) for channel in samples)
    return (samples.mean(axis=0, dtype=np.float32),)


def _channels_identical(samples: np.ndarray) -> bool:
    reference = samples[0]
    return all(float(np.mean(np.abs(reference - other))) < IDENTICAL_CHANNEL_TOLERANCE for other in samples[1:])


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip() or type(exc).__name__
