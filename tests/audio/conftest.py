"""Fixture generation for the audio tests.

Every test file here is made at test time from real 8 kHz human recordings (the Asterisk prompts
of asterisk-core-sounds-en-wav), re-encoded once per session with PyAV's encoders (FFmpeg in
process) or sox, in memory or under a session temp dir. Nothing is synthesised: what the decoder
gets is what a PBX or a browser uploads.

References are made independently of the code under test: sox resamples the source to 16 kHz
(SoX's own resampler, not FFmpeg's swresample), and :func:`waveform_match` /
:func:`envelope_match` compare a decode with it.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, TypeVar

import av
import numpy as np
import pytest

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
SOURCE_PROMPT = "agent-alreadyon"
"""5.5 s: "That agent is already logged on. Please enter your agent number followed by the pound key." """
OTHER_PROMPT = "vm-intro"
"""5.7 s, a different speaker turn: the second party of the two-channel fixtures."""
REFERENCE_RATE_HZ = 16_000
ENVELOPE_FRAME_S = 0.02

T = TypeVar("T")


# --- reading and writing ---------------------------------------------------------------------


def read_wav_pcm(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as (channels, n) float32 in [-1, 1] and its rate (stdlib, not FFmpeg)."""
    with wave.open(str(path), "rb") as handle:
        assert handle.getsampwidth() == 2, f"{path} is not 16-bit PCM"
        channels = handle.getnchannels()
        rate = handle.getframerate()
        raw = handle.readframes(handle.getnframes())
    samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).T
    return (samples.astype(np.float32) / 32768.0), rate


def write_wav_pcm(samples: np.ndarray, rate: int) -> bytes:
    """(channels, n) float32 in [-1, 1] -> 16-bit PCM WAV bytes (stdlib writer, any channel count)."""
    samples = np.atleast_2d(samples)
    ints = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(samples.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(ints.T.tobytes())
    return buffer.getvalue()


def sox(*args: str | Path) -> bytes:
    """Run sox (or soxi with ``tool="soxi"``) and return its stdout; fail the test run loudly."""
    return _run_tool("sox", *args)


def soxi(*args: str | Path) -> str:
    return _run_tool("soxi", *args).decode().strip()


def _run_tool(tool: str, *args: str | Path) -> bytes:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (Debian package sox): run ./scripts/setup --test")
    result = subprocess.run([tool, *map(str, args)], capture_output=True, timeout=60)
    if result.returncode != 0:
        pytest.fail(f"{tool} {' '.join(map(str, args))} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def sox_resample(path: Path, rate: int) -> np.ndarray:
    """``path`` resampled by SoX's high-quality resampler to mono float32 at ``rate``."""
    raw = sox(path, "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-c", "1", "-", "rate", "-v", str(rate))
    return np.frombuffer(raw, dtype="<f4").copy()


def pyav_encode(
    samples: np.ndarray,
    rate: int,
    container: str,
    codec: str,
    *,
    out_rate: int | None = None,
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
) -> bytes:
    """(channels, n) float32 at ``rate`` encoded by FFmpeg's ``codec`` into ``container``.

    PyAV converts the frame to the encoder's sample format, rate and frame size itself.
    """
    samples = np.atleast_2d(samples).astype(np.float32)
    layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream: Any = output.add_stream(codec, rate=out_rate or rate, options=options or {})
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def pyav_raw(samples: np.ndarray, rate: int, muxer: str, codec: str) -> bytes:
    """Headerless audio (``mulaw``, ``alaw``...): the raw muxer writes only the encoded samples."""
    return pyav_encode(samples, rate, muxer, codec)


def pad_to(samples: np.ndarray, length: int) -> np.ndarray:
    return np.pad(samples, (0, max(0, length - samples.shape[-1])))[:length]


# --- comparing a decode with its reference ---------------------------------------------------


def _normalised_xcorr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Best Pearson correlation of ``a`` and ``b`` over shifts of up to ``max_lag`` samples."""
    n = min(len(a), len(b))
    a = a[:n].astype(np.float64)
    b = b[:n].astype(np.float64)
    best = (-2.0, 0)
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(0, lag) : n + min(0, lag)]
        y = b[max(0, -lag) : n - max(0, lag)]
        x = x - x.mean()
        y = y - y.mean()
        denominator = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
        corr = float(np.dot(x, y) / denominator) if denominator else 0.0
        if corr > best[0]:
            best = (corr, lag)
    return best


def waveform_match(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 32) -> tuple[float, int]:
    """(correlation, lag in samples) of two 16 kHz signals, sample by sample."""
    return _normalised_xcorr(decoded, reference, max_lag)


def envelope(signal: np.ndarray, rate: int = REFERENCE_RATE_HZ, frame_s: float = ENVELOPE_FRAME_S) -> np.ndarray:
    """Frame energy in dB (floored at -60 dBFS): what a lossy codec must keep."""
    frame = int(rate * frame_s)
    count = len(signal) // frame
    frames = signal[: count * frame].astype(np.float64).reshape(count, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-3))


def envelope_match(decoded: np.ndarray, reference: np.ndarray, max_lag_frames: int = 3) -> tuple[float, int]:
    """(correlation, lag in frames) of the energy envelopes of two 16 kHz signals."""
    return _normalised_xcorr(envelope(decoded), envelope(reference), max_lag_frames)


def rms_db(signal: np.ndarray) -> float:
    return float(20 * np.log10(max(float(np.sqrt(np.mean(signal.astype(np.float64) ** 2))), 1e-9)))


# --- bounded calls ---------------------------------------------------------------------------


def within_seconds(seconds: float, call: Callable[[], T]) -> T:
    """Run ``call`` and return its result or re-raise its exception; fail if it takes longer
    than ``seconds`` (a hang fails the test instead of hanging the run)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the call did not return within {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


# --- the session's fixture files -------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One encoding of the source prompt, with what a correct decoder must report about it."""

    name: str
    data: bytes
    format: str
    """FFmpeg's container name as ``DecodedAudio.source_format`` reports it."""
    codec: str
    """FFmpeg's decoder name as ``DecodedAudio.source_codec`` reports it."""
    sample_rate_hz: int
    channels: int
    waveform: bool
    """True where the samples themselves survive (PCM, G.711): compare waveforms; else envelopes."""


@dataclass(frozen=True)
class Source:
    """The source prompts: originals, their 8 kHz samples and the sox 16 kHz references."""

    path: Path
    samples: np.ndarray
    """Mono float32 at 8 kHz."""
    reference: np.ndarray
    """Mono float32 at 16 kHz, resampled by sox."""
    other_path: Path
    other_samples: np.ndarray
    other_reference: np.ndarray

    @property
    def duration(self) -> float:
        return len(self.samples) / 8000


@pytest.fixture(scope="session")
def source() -> Source:
    path = SOUNDS_DIR / f"{SOURCE_PROMPT}.wav"
    other = SOUNDS_DIR / f"{OTHER_PROMPT}.wav"
    for needed in (path, other, SOUNDS_DIR / f"{SOURCE_PROMPT}.gsm"):
        if not needed.exists():
            pytest.fail(f"{needed} is missing: install asterisk-core-sounds-en-wav and -en-gsm (./scripts/setup --test)")
    samples, rate = read_wav_pcm(path)
    other_samples, other_rate = read_wav_pcm(other)
    assert rate == other_rate == 8000 and samples.shape[0] == other_samples.shape[0] == 1
    return Source(
        path=path,
        samples=samples[0],
        reference=sox_resample(path, REFERENCE_RATE_HZ),
        other_path=other,
        other_samples=other_samples[0],
        other_reference=sox_resample(other, REFERENCE_RATE_HZ),
    )


@pytest.fixture(scope="session")
def two_party(source: Source) -> np.ndarray:
    """(2, n) at 8 kHz: the source prompt on channel 0, the other prompt on channel 1."""
    length = max(len(source.samples), len(source.other_samples))
    return np.stack([pad_to(source.samples, length), pad_to(source.other_samples, length)])


@pytest.fixture(scope="session")
def variants(source: Source, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Variant]:
    """Every format the issue names, made once from the source prompt (mono unless named stereo)."""
    work = tmp_path_factory.mktemp("audio-variants")
    mono = source.samples[np.newaxis, :]
    dup = np.concatenate([mono, mono])
    out: dict[str, Variant] = {}

    def add(name: str, data: bytes, fmt: str, codec: str, rate: int, channels: int = 1, waveform: bool = False) -> None:
        out[name] = Variant(name, data, fmt, codec, rate, channels, waveform)

    add("wav-pcm-8k", source.path.read_bytes(), "wav", "pcm_s16le", 8000, waveform=True)
    for rate in (16_000, 44_100, 48_000):
        upsampled = sox_resample(source.path, rate)[np.newaxis, :]
        add(f"wav-pcm-{rate // 1000}k", pyav_encode(upsampled, rate, "wav", "pcm_s16le"), "wav", "pcm_s16le", rate, waveform=True)
    add("wav-mulaw", pyav_encode(mono, 8000, "wav", "pcm_mulaw"), "wav", "pcm_mulaw", 8000, waveform=True)
    add("wav-alaw", pyav_encode(mono, 8000, "wav", "pcm_alaw"), "wav", "pcm_alaw", 8000, waveform=True)

    gsm_wav = work / "wav49.wav"
    sox(source.path, "-e", "gsm-full-rate", gsm_wav)
    assert soxi("-e", gsm_wav) == "GSM", "sox did not write a GSM WAV"
    add("wav-gsm", gsm_wav.read_bytes(), "wav", "gsm_ms", 8000)
    add("raw-gsm", (SOUNDS_DIR / f"{SOURCE_PROMPT}.gsm").read_bytes(), "gsm", "gsm", 8000)

    add("mp3-mono", pyav_encode(mono, 8000, "mp3", "libmp3lame", bit_rate=32_000), "mp3", "mp3float", 8000)
    add("mp3-stereo", pyav_encode(dup, 8000, "mp3", "libmp3lame", out_rate=22_050, bit_rate=64_000),
        "mp3", "mp3float", 22_050, channels=2)
    add("ogg-opus", pyav_encode(mono, 8000, "ogg", "libopus", out_rate=48_000, bit_rate=24_000), "ogg", "opus", 48_000)
    add("webm-opus", pyav_encode(mono, 8000, "webm", "libopus", out_rate=48_000, bit_rate=24_000),
        "matroska,webm", "opus", 48_000)
    add("flac", pyav_encode(mono, 8000, "flac", "flac"), "flac", "flac", 8000, waveform=True)
    add("m4a-aac", pyav_encode(mono, 8000, "ipod", "aac", out_rate=16_000, bit_rate=48_000),
        "mov,mp4,m4a,3gp,3g2,mj2", "aac", 16_000)
    return out
