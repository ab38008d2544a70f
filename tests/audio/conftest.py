"""Fixtures of the audio pipeline tests: real recordings re-encoded into every upload format.

Every file here is made at test time from real 8 kHz human recordings (the Asterisk prompts of
asterisk-core-sounds-en-wav, plus the raw ``.gsm`` of asterisk-core-sounds-en-gsm), encoded once
per session by FFmpeg's encoders through PyAV, or by sox, in memory or under a session temp dir.
Nothing is synthesised: what the decoder gets is what a PBX, a phone system or a browser uploads.

The references the decodes are held against are made apart from the code under test: the stdlib
``wave`` module reads the source, and sox's own resampler (not FFmpeg's swresample) brings it to
16 kHz.

Every ``conftest.py`` outside a package is imported under the one module name ``conftest`` (and
pytest drops the previous one from ``sys.modules`` before importing the next), so the test
modules here never ``import conftest``: the helpers reach them as the ``kit`` fixture, and
``asr_testkit``'s ``word_error_rate`` as the ``word_error_rate`` fixture.
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

import asr_testkit
from callpipe_asr.audio import AudioLimits
from callpipe_asr.settings import AudioSettings

SOURCE_PROMPT = "agent-alreadyon"
"""5.5 s: "That agent is already logged on. Please enter your agent number followed by the pound key." """
OTHER_PROMPT = "vm-intro"
"""5.7 s, another sentence: the second party of the two-channel fixtures."""
GSM_DIR = Path("/usr/share/asterisk/sounds/en")
"""Where asterisk-core-sounds-en-gsm puts the raw ``.gsm`` prompts (next to the ``.wav`` ones)."""
REFERENCE_RATE_HZ = 16_000
ENVELOPE_FRAME_S = 0.02

VARIANT_NAMES = (
    "wav-pcm-8k",
    "wav-pcm-16k",
    "wav-pcm-44k",
    "wav-pcm-48k",
    "wav-mulaw",
    "wav-alaw",
    "wav-gsm",
    "raw-gsm",
    "mp3-mono",
    "mp3-stereo-dup",
    "ogg-opus",
    "webm-opus",
    "flac",
    "m4a-aac",
)
"""The source prompt in every format the issue names; ``variant_name`` runs a test over each."""

TWO_PARTY_NAMES = ("wav-pcm", "flac", "mp3", "webm-opus")
"""Two-channel recordings with a different party on each channel; ``two_party_name`` runs each."""

T = TypeVar("T")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant_name" in metafunc.fixturenames:
        metafunc.parametrize("variant_name", VARIANT_NAMES)
    if "two_party_name" in metafunc.fixturenames:
        metafunc.parametrize("two_party_name", TWO_PARTY_NAMES)


# --- reading and writing -----------------------------------------------------------------------


def read_wav_pcm(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as (channels, n) float32 in [-1, 1] and its rate (stdlib, not FFmpeg)."""
    with wave.open(str(path), "rb") as handle:
        assert handle.getsampwidth() == 2, f"{path} is not 16-bit PCM"
        channels = handle.getnchannels()
        rate = handle.getframerate()
        raw = handle.readframes(handle.getnframes())
    samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).T
    return samples.astype(np.float32) / 32768.0, rate


def to_s16le(samples: np.ndarray) -> bytes:
    """(channels, n) or (n,) float32 in [-1, 1] -> interleaved 16-bit little-endian PCM."""
    samples = np.atleast_2d(samples)
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").T.tobytes()


def write_wav_pcm(samples: np.ndarray, rate: int) -> bytes:
    """(channels, n) float32 -> 16-bit PCM WAV bytes (stdlib writer: any channel count, no layout)."""
    samples = np.atleast_2d(samples)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(samples.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(to_s16le(samples))
    return buffer.getvalue()


def _run_tool(tool: str, *args: str | Path) -> bytes:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (Debian package sox): run ./scripts/setup --test")
    result = subprocess.run([tool, *map(str, args)], capture_output=True, timeout=60, check=False)
    if result.returncode != 0:
        pytest.fail(f"{tool} {' '.join(map(str, args))} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def sox(*args: str | Path) -> bytes:
    return _run_tool("sox", *args)


def soxi(*args: str | Path) -> str:
    return _run_tool("soxi", *args).decode().strip()


def sox_resample(path: Path, rate: int) -> np.ndarray:
    """``path`` as mono float32 at ``rate``, by SoX's very-high-quality resampler."""
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
) -> bytes:
    """(channels, n) float32 at ``rate`` (mono or stereo), encoded by FFmpeg's ``codec`` into
    ``container`` (a raw muxer such as ``mulaw`` writes headerless samples).

    PyAV converts the frame to the encoder's sample format, rate and frame size itself.
    """
    samples = np.ascontiguousarray(np.atleast_2d(samples), dtype=np.float32)
    layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream: Any = output.add_stream(codec, rate=out_rate or rate)
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def pad_to(samples: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad or cut the last axis to ``length``."""
    width = [(0, 0)] * (samples.ndim - 1) + [(0, max(0, length - samples.shape[-1]))]
    return np.pad(samples, width)[..., :length]


# --- comparing a decode with its reference -----------------------------------------------------


def _best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """The best correlation coefficient of ``a`` and ``b`` over shifts of up to ``max_lag``
    (``a`` later than ``b`` is a positive shift), and that shift. One FFT for all shifts."""
    n = min(len(a), len(b))
    x = a[:n].astype(np.float64) - float(np.mean(a[:n]))
    y = b[:n].astype(np.float64) - float(np.mean(b[:n]))
    scale = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    if not scale:
        return 0.0, 0
    size = 1 << (2 * n - 1).bit_length()
    products = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    lags = np.arange(-max_lag, max_lag + 1)
    values = products[lags % size] / scale
    best = int(np.argmax(values))
    return float(values[best]), int(lags[best])


def waveform_match(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 16) -> tuple[float, int]:
    """(correlation, shift in samples) of two 16 kHz signals compared sample by sample."""
    return _best_correlation(decoded, reference, max_lag)


def envelope(signal: np.ndarray, rate: int = REFERENCE_RATE_HZ, frame_s: float = ENVELOPE_FRAME_S) -> np.ndarray:
    """Energy per 20 ms frame in dB, floored at -60 dBFS: what any codec must keep of speech."""
    frame = int(rate * frame_s)
    count = len(signal) // frame
    frames = signal[: count * frame].astype(np.float64).reshape(count, frame)
    return 20 * np.log10(np.maximum(np.sqrt(np.mean(frames**2, axis=1)), 1e-3))


def envelope_match(decoded: np.ndarray, reference: np.ndarray, max_lag_frames: int = 3) -> tuple[float, int]:
    """(correlation, shift in frames) of the energy envelopes of two 16 kHz signals."""
    return _best_correlation(envelope(decoded), envelope(reference), max_lag_frames)


def rms_db(signal: np.ndarray) -> float:
    return float(20 * np.log10(max(float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))), 1e-9)))


# --- bounded calls -----------------------------------------------------------------------------


def within_seconds(seconds: float, call: Callable[[], T]) -> T:
    """``call()``'s result, or its exception re-raised; the test fails if it takes longer than
    ``seconds`` (a hang fails the test instead of hanging the run)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="bounded-audio-call")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the call did not return within {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


class Kit:
    """The helpers above, handed to the test modules as the ``kit`` fixture."""

    read_wav_pcm = staticmethod(read_wav_pcm)
    to_s16le = staticmethod(to_s16le)
    write_wav_pcm = staticmethod(write_wav_pcm)
    sox = staticmethod(sox)
    soxi = staticmethod(soxi)
    sox_resample = staticmethod(sox_resample)
    pyav_encode = staticmethod(pyav_encode)
    pad_to = staticmethod(pad_to)
    waveform_match = staticmethod(waveform_match)
    envelope = staticmethod(envelope)
    envelope_match = staticmethod(envelope_match)
    rms_db = staticmethod(rms_db)
    within_seconds = staticmethod(within_seconds)
    GSM_DIR = GSM_DIR
    SOURCE_PROMPT = SOURCE_PROMPT
    OTHER_PROMPT = OTHER_PROMPT


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="session")
def word_error_rate() -> Callable[[str, str], float]:
    """``asr_testkit.word_error_rate``, the one the benchmark scores with."""
    return asr_testkit.word_error_rate


@pytest.fixture(scope="session")
def default_limits() -> AudioLimits:
    """The limits the default settings give (4 h, 8 channels)."""
    settings = AudioSettings()
    return AudioLimits(settings.max_duration_seconds, settings.max_channels)


# --- the session's recordings ------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One encoding of the source prompt, with what a correct decoder must report about it."""

    name: str
    data: bytes
    format: str
    """FFmpeg's container name, as ``DecodedAudio.source_format`` reports it."""
    codec: str
    """FFmpeg's decoder name, as ``DecodedAudio.source_codec`` reports it."""
    sample_rate_hz: int
    channels: int
    waveform: bool
    """True where the samples themselves survive (PCM, G.711, FLAC): compare waveforms; else
    (GSM, MP3, Opus, AAC) compare energy envelopes."""


@dataclass(frozen=True)
class Source:
    """The two prompts: their files, 8 kHz samples (stdlib) and 16 kHz references (sox)."""

    path: Path
    samples: np.ndarray
    reference: np.ndarray
    other_path: Path
    other_samples: np.ndarray
    other_reference: np.ndarray

    @property
    def duration(self) -> float:
        return len(self.samples) / 8000


@pytest.fixture(scope="session")
def source(prompts: dict[str, Any]) -> Source:
    path = prompts[SOURCE_PROMPT].path
    other = prompts[OTHER_PROMPT].path
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
def variants(source: Source, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Variant]:
    """The source prompt in every format of ``VARIANT_NAMES``, encoded once."""
    gsm = GSM_DIR / f"{SOURCE_PROMPT}.gsm"
    if not gsm.exists():
        pytest.fail(f"{gsm} is missing: install asterisk-core-sounds-en-gsm (./scripts/setup --test)")
    work = tmp_path_factory.mktemp("audio-variants")
    mono = source.samples[np.newaxis, :]
    out: dict[str, Variant] = {}

    def add(name: str, data: bytes, fmt: str, codec: str, rate: int, *, channels: int = 1, waveform: bool = False) -> None:
        out[name] = Variant(name, data, fmt, codec, rate, channels, waveform)

    add("wav-pcm-8k", source.path.read_bytes(), "wav", "pcm_s16le", 8000, waveform=True)
    for rate in (16_000, 44_100, 48_000):
        upsampled = sox_resample(source.path, rate)[np.newaxis, :]
        add(f"wav-pcm-{rate // 1000}k", pyav_encode(upsampled, rate, "wav", "pcm_s16le"), "wav", "pcm_s16le", rate,
            waveform=True)
    add("wav-mulaw", pyav_encode(mono, 8000, "wav", "pcm_mulaw"), "wav", "pcm_mulaw", 8000, waveform=True)
    add("wav-alaw", pyav_encode(mono, 8000, "wav", "pcm_alaw"), "wav", "pcm_alaw", 8000, waveform=True)

    wav49 = work / "wav49.wav"  # Asterisk's "wav49": GSM 06.10 in a WAV (Microsoft GSM framing)
    sox(source.path, "-e", "gsm-full-rate", wav49)
    assert soxi("-e", wav49) == "GSM", "sox did not write a GSM WAV"
    add("wav-gsm", wav49.read_bytes(), "wav", "gsm_ms", 8000)
    add("raw-gsm", gsm.read_bytes(), "gsm", "gsm", 8000)

    add("mp3-mono", pyav_encode(mono, 8000, "mp3", "libmp3lame", bit_rate=32_000), "mp3", "mp3float", 8000)
    # FusionPBX's voicemail MP3: the mono call duplicated into both channels of a stereo file.
    add("mp3-stereo-dup", pyav_encode(np.concatenate([mono, mono]), 8000, "mp3", "libmp3lame", out_rate=22_050,
                                      bit_rate=64_000), "mp3", "mp3float", 22_050, channels=2)
    add("ogg-opus", pyav_encode(mono, 8000, "ogg", "libopus", out_rate=48_000, bit_rate=24_000), "ogg", "opus", 48_000)
    add("webm-opus", pyav_encode(mono, 8000, "webm", "libopus", out_rate=48_000, bit_rate=24_000),
        "matroska,webm", "opus", 48_000)
    add("flac", pyav_encode(mono, 8000, "flac", "flac"), "flac", "flac", 8000, waveform=True)
    add("m4a-aac", pyav_encode(mono, 8000, "ipod", "aac", out_rate=16_000, bit_rate=48_000),
        "mov,mp4,m4a,3gp,3g2,mj2", "aac", 16_000)
    assert tuple(out) == VARIANT_NAMES
    return out


@pytest.fixture
def variant(variants: dict[str, Variant], variant_name: str) -> Variant:
    return variants[variant_name]


@pytest.fixture(scope="session")
def two_party(source: Source) -> np.ndarray:
    """(2, n) at 8 kHz: the source prompt on channel 0, the other prompt on channel 1."""
    length = max(len(source.samples), len(source.other_samples))
    return np.stack([pad_to(source.samples, length), pad_to(source.other_samples, length)])


@pytest.fixture(scope="session")
def two_party_variants(two_party: np.ndarray) -> dict[str, Variant]:
    """A recorded call with one party per channel, in lossless and lossy formats."""
    out = {
        "wav-pcm": Variant("wav-pcm", write_wav_pcm(two_party, 8000), "wav", "pcm_s16le", 8000, 2, True),
        "flac": Variant("flac", pyav_encode(two_party, 8000, "flac", "flac"), "flac", "flac", 8000, 2, True),
        "mp3": Variant("mp3", pyav_encode(two_party, 8000, "mp3", "libmp3lame", out_rate=16_000, bit_rate=64_000),
                       "mp3", "mp3float", 16_000, 2, False),
        "webm-opus": Variant("webm-opus", pyav_encode(two_party, 8000, "webm", "libopus", out_rate=48_000,
                                                      bit_rate=48_000), "matroska,webm", "opus", 48_000, 2, False),
    }
    assert tuple(out) == TWO_PARTY_NAMES
    return out


@pytest.fixture
def two_party_variant(two_party_variants: dict[str, Variant], two_party_name: str) -> Variant:
    return two_party_variants[two_party_name]
