"""The benchmark corpus, built from the Debian packages into ``bench/corpus/`` (git-ignored).

Four kinds of recording, each an 8 kHz PCM master plus its codec variants:

- ``prompt``: single Asterisk prompts (real human speech, 1 to 30 s) with their reference texts;
- ``voicemail``: 20 to 60 s messages made of several prompts with pauses, on a line-noise bed,
  ending in 15 s of silence, 15 s of music on hold, 10 s of line noise, or nothing;
- ``long``: 2 to 5 minute messages with long pauses (6 to 20 s) between sentences;
- ``nonspeech``: silence, music on hold (excerpts and whole tracks), line noise, network tones,
  DTMF, and Asterisk's own recorded beeps: the expected transcript is empty.

Every composite records where each sentence is (``sentences``) and where the speech ends
(``speech_end``), so a run can check that each sentence came back at its place and that nothing
was written after the speech. The build is deterministic (fixed seeds) and cached: a corpus whose
manifest matches the spec is reused.
"""

from __future__ import annotations

import json
import wave
from functools import partial
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import audio
from .sources import Prompt, moh_tracks, sound_effect_prompts, speech_prompts, spread

MANIFEST = "manifest.json"
CORPUS_VERSION = 4
"""Bump when the recipe below changes, so cached corpora are rebuilt."""
NOISE_BED_DB = -58.0
"""dBFS of the line noise under every composite: a quiet but real line."""
TAIL_SECONDS = {"silence": 15.0, "moh": 15.0, "noise": 10.0, "none": 0.0}
VOICEMAIL_TAILS = ("silence", "moh", "noise", "none")


@dataclass(frozen=True)
class CorpusSpec:
    """How much of each kind to build (``QUICK`` for development, ``FULL`` for the report)."""

    prompts: int
    voicemails: int
    long_seconds: tuple[float, ...]
    moh_excerpts_per_track: int
    moh_whole_tracks: int
    codecs: tuple[str, ...] = tuple(audio.CODECS)
    nonspeech_codecs: tuple[str, ...] = ("pcm-8k", "gsm")


QUICK = CorpusSpec(prompts=8, voicemails=3, long_seconds=(145.0,), moh_excerpts_per_track=1, moh_whole_tracks=1)
FULL = CorpusSpec(prompts=30, voicemails=6, long_seconds=(150.0, 280.0), moh_excerpts_per_track=2, moh_whole_tracks=5)


@dataclass(frozen=True)
class Sentence:
    text: str
    start: float
    """Seconds from the start of the recording."""
    end: float


@dataclass(frozen=True)
class Recording:
    id: str
    kind: str
    """``prompt``, ``voicemail``, ``long`` or ``nonspeech``."""
    duration: float
    text: str
    """The reference: every sentence in order; empty for non-speech."""
    sentences: tuple[Sentence, ...]
    speech_end: float
    """Seconds; only silence, music or noise after it (0 for non-speech)."""
    tail: str
    """What follows the speech: ``silence``, ``moh``, ``noise``, ``none`` (or the non-speech kind)."""
    files: dict[str, str] = field(default_factory=dict)
    """Codec -> path relative to the corpus directory."""

    def path(self, root: Path, codec: str = "pcm-8k") -> Path:
        return root / self.files[codec]


@dataclass(frozen=True)
class Corpus:
    root: Path
    recordings: tuple[Recording, ...]

    def of_kind(self, *kinds: str) -> list[Recording]:
        return [r for r in self.recordings if r.kind in kinds]


def build_corpus(root: Path, spec: CorpusSpec) -> Corpus:
    """The corpus under ``root``: reused when its manifest matches ``spec``, else built anew."""
    manifest = root / MANIFEST
    wanted = {"version": CORPUS_VERSION, "spec": asdict(spec)}
    if manifest.exists():
        stored = json.loads(manifest.read_text())
        if {k: stored.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
            return Corpus(root, tuple(_recording_from_dict(r) for r in stored["recordings"]))
    recordings = _build_all(root, spec)
    manifest.write_text(json.dumps({**wanted, "recordings": [asdict(r) for r in recordings]}, indent=1))
    return Corpus(root, tuple(recordings))


def _recording_from_dict(data: dict[str, Any]) -> Recording:
    sentences = tuple(Sentence(**s) for s in data.pop("sentences"))
    return Recording(sentences=sentences, **data)


def _build_all(root: Path, spec: CorpusSpec) -> list[Recording]:
    prompts = speech_prompts()
    singles = spread([p for p in prompts if _seconds(p) <= 20.0], spec.prompts)
    # Composites draw on everything but the single prompts: the two sets stay independent.
    pool = [p for p in prompts if p not in singles and 2.0 <= _seconds(p) <= 12.0]
    recordings = [_single(root, prompt, spec.codecs) for prompt in singles]
    rng = np.random.default_rng(20261125)
    for index in range(spec.voicemails):
        tail = VOICEMAIL_TAILS[index % len(VOICEMAIL_TAILS)]
        recordings.append(_voicemail(root, f"voicemail-{index:02d}-{tail}", pool, rng, tail, spec.codecs))
    for index, seconds in enumerate(spec.long_seconds):
        tail = ("moh", "silence")[index % 2]
        recordings.append(_long(root, f"long-{index:02d}-{int(seconds)}s-{tail}", pool, rng, seconds, tail, spec.codecs))
    recordings.extend(_nonspeech(root, spec))
    return recordings


def _seconds(prompt: Prompt) -> float:
    """Duration from the WAV header (no samples read: the pool is hundreds of files)."""
    with wave.open(str(prompt.path), "rb") as handle:
        return handle.getnframes() / handle.getframerate()


def _encode(root: Path, ident: str, samples: np.ndarray, codecs: tuple[str, ...]) -> dict[str, str]:
    """Write the PCM master, then every codec variant of it; return codec -> relative path."""
    master = root / "pcm-8k" / f"{ident}.wav"
    audio.write_wav(master, samples)
    files = {}
    for codec in codecs:
        extension, _ = audio.CODECS[codec]
        target = root / codec / f"{ident}.{extension}"
        if codec != "pcm-8k":
            audio.encode_variant(master, codec, target)
        files[codec] = str(target.relative_to(root))
    return files


def _single(root: Path, prompt: Prompt, codecs: tuple[str, ...]) -> Recording:
    samples = audio.read_wav(prompt.path)
    duration = len(samples) / audio.RATE_HZ
    ident = f"prompt-{prompt.name.replace('/', '_')}"
    return Recording(
        id=ident, kind="prompt", duration=duration, text=prompt.text,
        sentences=(Sentence(prompt.text, 0.0, duration),), speech_end=duration, tail="none",
        files=_encode(root, ident, samples, codecs),
    )


class _Timeline:
    """Builds a composite piece by piece, remembering where each sentence lands."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.sentences: list[Sentence] = []
        self.length = 0

    def add(self, samples: np.ndarray, text: str | None = None) -> None:
        if text is not None:
            start = self.length / audio.RATE_HZ
            self.sentences.append(Sentence(text, round(start, 3), round(start + len(samples) / audio.RATE_HZ, 3)))
        self.parts.append(samples.astype(np.float32))
        self.length += len(samples)

    def render(self, seed: int) -> np.ndarray:
        """The pieces end to end, over a continuous line-noise bed."""
        signal: np.ndarray = np.concatenate(self.parts)
        bed = audio.line_noise(len(signal) / audio.RATE_HZ, NOISE_BED_DB, seed)
        mixed: np.ndarray = signal + bed
        return mixed


def _speech(prompt: Prompt, rng: np.random.Generator) -> np.ndarray:
    """A prompt at a caller's level: -6 to +3 dB from the studio recording."""
    return audio.read_wav(prompt.path) * audio.db_to_amplitude(float(rng.uniform(-6.0, 3.0)))


def _tail(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "moh":
        track = moh_tracks()[int(rng.integers(len(moh_tracks())))]
        music = audio.read_wav(track)
        start = int(rng.integers(0, len(music) - int(seconds * audio.RATE_HZ)))
        return music[start:start + int(seconds * audio.RATE_HZ)] * audio.db_to_amplitude(-6.0)
    if kind == "noise":
        return audio.line_noise(seconds, -40.0, int(rng.integers(1 << 30)), hum_hz=60.0)
    return audio.silence(seconds)


@dataclass(frozen=True)
class Composite:
    """A voicemail made of prompts: the samples, where each sentence is, where the speech ends."""

    samples: np.ndarray
    sentences: tuple[Sentence, ...]
    speech_end: float

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)


def compose(prompts: Sequence[Prompt], pauses: Sequence[float], tail: str, seed: int, lead_seconds: float = 0.8) -> Composite:
    """``prompts`` with ``pauses`` (seconds) after each, then ``tail`` (a key of
    :data:`TAIL_SECONDS`), over a line-noise bed; levels and music vary with ``seed``."""
    rng = np.random.default_rng(seed)
    timeline = _Timeline()
    timeline.add(audio.silence(lead_seconds))
    for prompt, pause in zip(prompts, pauses, strict=True):
        timeline.add(_speech(prompt, rng), prompt.text)
        timeline.add(audio.silence(pause))
    speech_end = timeline.sentences[-1].end
    timeline.add(_tail(tail, TAIL_SECONDS[tail], rng))
    return Composite(timeline.render(int(rng.integers(1 << 30))), tuple(timeline.sentences), speech_end)


def _composite(root: Path, ident: str, kind: str, chosen: list[Prompt], pauses: list[float], tail: str,
               rng: np.random.Generator, codecs: tuple[str, ...]) -> Recording:
    made = compose(chosen, pauses, tail, int(rng.integers(1 << 30)), float(rng.uniform(0.3, 1.5)))
    return Recording(
        id=ident, kind=kind, duration=len(made.samples) / audio.RATE_HZ, text=made.text, sentences=made.sentences,
        speech_end=made.speech_end, tail=tail, files=_encode(root, ident, made.samples, codecs),
    )


def _voicemail(root: Path, ident: str, pool: list[Prompt], rng: np.random.Generator, tail: str,
               codecs: tuple[str, ...]) -> Recording:
    count = int(rng.integers(3, 6))
    chosen = [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]
    pauses = [float(rng.uniform(0.8, 3.0)) for _ in chosen[:-1]] + [0.5]
    return _composite(root, ident, "voicemail", chosen, pauses, tail, rng, codecs)


def _long(root: Path, ident: str, pool: list[Prompt], rng: np.random.Generator, seconds: float, tail: str,
          codecs: tuple[str, ...]) -> Recording:
    """Sentences with long pauses (6 to 20 s) until ``seconds`` are filled (tail included)."""
    order = [pool[i] for i in rng.permutation(len(pool))]
    chosen: list[Prompt] = []
    pauses: list[float] = []
    total = TAIL_SECONDS[tail] + 1.0
    for prompt in order:
        pause = float(rng.uniform(6.0, 20.0))
        if total + _seconds(prompt) + pause > seconds:
            continue  # a shorter sentence may still fit
        chosen.append(prompt)
        pauses.append(pause)
        total += _seconds(prompt) + pause
    pauses[-1] = 0.5
    return _composite(root, ident, "long", chosen, pauses, tail, rng, codecs)


def _nonspeech_signals(spec: CorpusSpec) -> dict[str, Callable[[], np.ndarray]]:
    """Name -> maker of each non-speech recording (made lazily: whole MOH tracks are long)."""
    signals: dict[str, Callable[[], np.ndarray]] = {
        "silence-30s": lambda: audio.silence(30.0),
        "line-noise-quiet-30s": lambda: audio.line_noise(30.0, -50.0, 1),
        "line-noise-loud-30s": lambda: audio.line_noise(30.0, -30.0, 2, hum_hz=60.0),
        "dial-tone-20s": lambda: audio.tone((350.0, 440.0), 20.0, -16.0),
        "ringback-24s": lambda: audio.tone((440.0, 480.0), 24.0, -19.0, cadence=(2.0, 4.0)),
        "busy-20s": lambda: audio.tone((480.0, 620.0), 20.0, -24.0, cadence=(0.5, 0.5)),
        "sit-tones-9s": lambda: np.concatenate([
            np.concatenate([audio.tone((f,), 0.33, -20.0) for f in (913.8, 1370.6, 1776.7)] + [audio.silence(2.0)])
            for _ in range(3)
        ]),
        "test-tone-1004hz-10s": lambda: audio.tone((1004.0,), 10.0, -13.0),
        "fax-cng-15s": lambda: audio.tone((1100.0,), 15.0, -15.0, cadence=(0.5, 3.0)),
        "dtmf-keypad": lambda: np.concatenate([audio.silence(1.0), audio.dtmf("1234567890*#", -10.0), audio.silence(1.0)]),
        "dtmf-pin-entry": lambda: np.concatenate(
            [audio.dtmf(d, -12.0, 0.09, 0.4) for d in ("4242#", "8500", "*98", "1234#")] + [audio.silence(2.0)]),
    }
    for path in sound_effect_prompts():
        signals[f"asterisk-{path.stem}"] = partial(_padded_sound, path)
    for number, track in enumerate(moh_tracks()):
        for excerpt in range(spec.moh_excerpts_per_track):
            signals[f"moh-{track.stem}-{excerpt}"] = partial(_moh_excerpt, track, excerpt, 30.0)
        if number < spec.moh_whole_tracks:
            signals[f"moh-{track.stem}-whole"] = partial(_moh_whole, track)
    return signals


def _padded_sound(path: Path) -> np.ndarray:
    """An Asterisk sound prompt with a second of silence each side, as a PBX would play it."""
    return np.concatenate([audio.silence(1.0), audio.read_wav(path), audio.silence(1.0)])


def _moh_whole(track: Path) -> np.ndarray:
    """A whole music-on-hold track, from its first to its last sample, 6 dB down (as played)."""
    return audio.read_wav(track) * audio.db_to_amplitude(-6.0)


def _moh_excerpt(track: Path, index: int, seconds: float) -> np.ndarray:
    """The ``index``-th excerpt, spread over the track (intros and the middles differ)."""
    music = audio.read_wav(track)
    length = int(seconds * audio.RATE_HZ)
    start = (len(music) - length) * (index + 1) // 3
    return music[start:start + length] * audio.db_to_amplitude(-6.0)


def _nonspeech(root: Path, spec: CorpusSpec) -> list[Recording]:
    recordings = []
    for name, make in _nonspeech_signals(spec).items():
        samples = make()
        ident = f"nonspeech-{name}"
        recordings.append(Recording(
            id=ident, kind="nonspeech", duration=len(samples) / audio.RATE_HZ, text="", sentences=(),
            speech_end=0.0, tail=name.split("-")[0], files=_encode(root, ident, samples, spec.nonspeech_codecs),
        ))
    return recordings
