"""Telephone signals for the corpus: reading the Debian recordings, making the non-speech a line
carries (noise, tones, DTMF), and encoding a master into every codec and container.

Everything is 8 kHz mono float32 in [-1, 1] until it is encoded: the rate of the Asterisk prompts
and music on hold, and of the telephone network.
"""

from __future__ import annotations

import io
import subprocess
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np

RATE_HZ = 8000
DTMF_HZ = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209), "0": (941, 1336), "#": (941, 1477),
}
"""The keypad's two-tone pairs (ITU-T Q.23)."""


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono 8 kHz WAV (the Asterisk prompts and music on hold) as float32."""
    with wave.open(str(path), "rb") as handle:
        if handle.getframerate() != RATE_HZ or handle.getnchannels() != 1 or handle.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono {RATE_HZ} Hz")
        data = handle.readframes(handle.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE_HZ) -> None:
    """16-bit PCM mono WAV, clipped to full scale: the master every variant is encoded from."""
    pcm = (np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * RATE_HZ)), dtype=np.float32)


def db_to_amplitude(level_db: float) -> float:
    return float(10.0 ** (level_db / 20.0))


def scale_to_rms(samples: np.ndarray, level_db: float) -> np.ndarray:
    """The signal at an RMS of ``level_db`` dBFS (noise and tones are specified by level)."""
    rms = float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0
    return samples if rms == 0.0 else (samples * (db_to_amplitude(level_db) / rms)).astype(np.float32)


def line_noise(seconds: float, level_db: float, seed: int, hum_hz: float = 50.0) -> np.ndarray:
    """Pink-ish hiss plus mains hum and its harmonics: what an analogue line or a cheap ATA adds
    between words. Pink, not white: a phone line's noise falls with frequency."""
    count = int(round(seconds * RATE_HZ))
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(count))
    frequencies = np.fft.rfftfreq(count, 1.0 / RATE_HZ)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0
    hiss = np.fft.irfft(spectrum, count)
    t = np.arange(count) / RATE_HZ
    hum = sum(np.sin(2 * np.pi * hum_hz * k * t) / k for k in (1, 3, 5))
    noise: np.ndarray = scale_to_rms(hiss.astype(np.float32), level_db) + scale_to_rms(np.asarray(hum, dtype=np.float32), level_db - 6)
    return noise.astype(np.float32)


def tone(frequencies: tuple[float, ...], seconds: float, level_db: float, cadence: tuple[float, float] | None = None) -> np.ndarray:
    """Summed sines, optionally switched on and off (``cadence`` = seconds on, seconds off):
    dial tone, ringback, busy, special information tones."""
    t = np.arange(int(round(seconds * RATE_HZ))) / RATE_HZ
    signal = sum(np.sin(2 * np.pi * f * t) for f in frequencies)
    signal = scale_to_rms(np.asarray(signal, dtype=np.float32), level_db)
    if cadence is not None:
        on, off = cadence
        signal = signal * ((t % (on + off)) < on)
    return signal.astype(np.float32)


def dtmf(digits: str, level_db: float, on_seconds: float = 0.12, off_seconds: float = 0.12) -> np.ndarray:
    """Keypad digits as a caller presses them: each pair of tones, then a gap."""
    parts = []
    for digit in digits:
        parts.append(tone(DTMF_HZ[digit], on_seconds, level_db))
        parts.append(silence(off_seconds))
    return np.concatenate(parts) if parts else silence(0)


def sox(*args: str | Path) -> None:
    """Run SoX (Debian package sox), raising with its message on failure."""
    result = subprocess.run(["sox", *map(str, args)], capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sox {' '.join(map(str, args))}: {result.stderr.decode(errors='replace').strip()}")


def pyav_encode(samples: np.ndarray, container: str, codec: str, *, channels: int = 1, out_rate: int | None = None,
                bit_rate: int | None = None) -> bytes:
    """8 kHz mono samples encoded by FFmpeg's ``codec`` into ``container`` (duplicated into
    ``channels`` channels: the "stereo" MP3 FusionPBX writes carries the call twice)."""
    planes = np.ascontiguousarray(np.repeat(samples[np.newaxis, :], channels, axis=0), dtype=np.float32)
    layout = {1: "mono", 2: "stereo"}[channels]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream: Any = output.add_stream(codec, rate=out_rate or RATE_HZ)
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = RATE_HZ
        frame.pts = 0
        frame.time_base = Fraction(1, RATE_HZ)
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def _sox_variant(output_options: tuple[str, ...] = (), effects: tuple[str, ...] = ()) -> Callable[[Path, Path], None]:
    """An encoder that runs ``sox master [output_options] target [effects]``."""

    def encode(master: Path, target: Path) -> None:
        sox(master, *output_options, target, *effects)

    return encode


def _pyav_variant(container: str, codec: str, **kwargs: Any) -> Callable[[Path, Path], None]:
    def encode(master: Path, target: Path) -> None:
        target.write_bytes(pyav_encode(read_wav(master), container, codec, **kwargs))
    return encode


def _copy(master: Path, target: Path) -> None:
    target.write_bytes(master.read_bytes())


CODECS: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    "pcm-8k": ("wav", _copy),
    "mulaw": ("wav", _sox_variant(("-e", "u-law"))),
    "alaw": ("wav", _sox_variant(("-e", "a-law"))),
    "gsm": ("wav", _sox_variant(("-e", "gsm-full-rate"))),
    "mp3-8k-mono": ("mp3", _pyav_variant("mp3", "libmp3lame", bit_rate=24_000)),
    "mp3-8k-stereo": ("mp3", _pyav_variant("mp3", "libmp3lame", channels=2, bit_rate=32_000)),
    "opus": ("ogg", _pyav_variant("ogg", "libopus", out_rate=48_000, bit_rate=16_000)),
    "flac": ("flac", _pyav_variant("flac", "flac")),
    "wav-48k-stereo": ("wav", _sox_variant(effects=("rate", "-v", "48000", "channels", "2"))),
}
"""Variant name -> (file extension, encoder from the 8 kHz PCM master). μ-law, A-law and GSM
(Asterisk's "wav49", GSM 06.10 in a WAV) by SoX, as a PBX writes them; MP3 at 8 kHz as FusionPBX
converts voicemail, mono and duplicated stereo; Ogg/Opus as browsers and WebRTC phones send;
FLAC; and 48 kHz stereo, a softphone's recording."""


def encode_variant(master: Path, codec: str, target: Path) -> None:
    """Write ``master`` (8 kHz PCM WAV) as ``codec`` (a key of :data:`CODECS`) to ``target``."""
    _, encoder = CODECS[codec]
    target.parent.mkdir(parents=True, exist_ok=True)
    encoder(master, target)
