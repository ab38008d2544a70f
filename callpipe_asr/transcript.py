"""The engine-neutral domain: what a request asks for and what recognition returns.

Engines produce these types; provider dialects translate them to and from their wire formats.
Nothing here knows about HTTP, a provider or an engine library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any


class Task(str, Enum):
    """What to do with the speech."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class ChannelMode(str, Enum):
    """How to read a multi-channel recording.

    AUTO splits channels that carry different signals (two parties of a call) and mixes channels
    that carry the same one (FusionPBX's MP3 conversion duplicates mono into stereo).
    """

    AUTO = "auto"
    MIX = "mix"
    SEPARATE = "separate"


@dataclass(frozen=True)
class AudioHints:
    """What a dialect declares about headerless audio (Watson's ``audio/mulaw;rate=8000``,
    Deepgram's ``encoding`` + ``sample_rate``). Containers with headers need none of this."""

    encoding: str | None = None
    """Raw sample encoding: ``s16le``, ``mulaw``, ``alaw``, ``f32le``; None means sniff the bytes."""
    sample_rate_hz: int | None = None
    """Hertz, for raw encodings."""
    channels: int | None = None
    """Channel count, for raw encodings."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioHints:
        return cls(**data)


@dataclass(frozen=True)
class RecognitionOptions:
    """Everything a request may ask of recognition, in our own words."""

    model: str | None = None
    """Model name or alias as the client sent it; None means the default model."""
    language: str | None = None
    """ISO 639-1 code (``en``); None means the model's own language or detection."""
    task: Task = Task.TRANSCRIBE
    prompt: str | None = None
    """Vocabulary and style hint (Whisper's initial prompt)."""
    hotwords: tuple[str, ...] = ()
    """Words to favour (names, product terms)."""
    temperature: float | None = None
    word_timestamps: bool = True
    segment_timestamps: bool = True
    """Whether the response shows when each segment was said. With this and ``word_timestamps``
    both false (a client that shows only the text) Whisper decodes without timestamp tokens,
    about 5 % faster; segments then span up to 30 s of speech, their times as fine as the
    speech detection's regions."""
    channel_mode: ChannelMode = ChannelMode.AUTO
    detect_language: bool = False
    """The client asked for the language to be detected (Deepgram ``detect_language``, AssemblyAI
    ``language_detection``, Google alternative languages): a multilingual model detects it."""
    language_candidates: tuple[str, ...] = ()
    """ISO 639-1 codes the request says the speech is in one of (Google's ``languageCode`` plus
    ``alternativeLanguageCodes``); detection chooses among them. Empty: the configured ones."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["task"] = self.task.value
        data["channel_mode"] = self.channel_mode.value
        data["hotwords"] = list(self.hotwords)
        data["language_candidates"] = list(self.language_candidates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecognitionOptions:
        """Options as a job stored them. Keys this version does not know are left out: a job
        written by a newer version (a rolling upgrade of API and worker processes) still runs."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["task"] = Task(values.get("task", Task.TRANSCRIBE.value))
        values["channel_mode"] = ChannelMode(values.get("channel_mode", ChannelMode.AUTO.value))
        values["hotwords"] = tuple(values.get("hotwords", ()))
        values["language_candidates"] = tuple(values.get("language_candidates", ()))
        return cls(**values)


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    """Seconds from the start of the recording."""
    end: float
    """Seconds from the start of the recording."""
    confidence: float | None = None
    """Probability in [0, 1] where the engine gives one."""


@dataclass(frozen=True)
class Segment:
    text: str
    """As the engine wrote it; Whisper starts each segment with a space."""
    start: float
    """Seconds."""
    end: float
    """Seconds."""
    words: tuple[Word, ...] = ()
    channel: int | None = None
    """Zero-based channel index when channels were transcribed apart, else None."""
    confidence: float | None = None
    """Probability in [0, 1] where the engine gives one (average over the words)."""
    no_speech_probability: float | None = None
    avg_logprob: float | None = None


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    language: str | None
    """ISO 639-1 code of the speech."""
    duration: float
    """Seconds of audio."""
    channels: int = 1
    """How many channels were transcribed apart (1 for mixed or mono audio)."""
    model: str | None = None
    """The configured model name that produced it."""
    language_confidence: float | None = None
    """Probability in [0, 1] of ``language`` where it was detected; None where it was given."""

    @property
    def text(self) -> str:
        """The whole transcript as one line per channel turn, without Whisper's leading spaces.

        For split channels each turn is prefixed with its channel, so plain-text clients still see
        who spoke.
        """
        if self.channels > 1:
            return "\n".join(f"[channel {s.channel}] {s.text.strip()}" for s in self.segments if s.text.strip())
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(w for s in self.segments for w in s.words)

    @property
    def is_empty(self) -> bool:
        return not self.text.strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "duration": self.duration,
            "channels": self.channels,
            "model": self.model,
            "language_confidence": self.language_confidence,
            "segments": [
                {
                    "text": s.text,
                    "start": s.start,
                    "end": s.end,
                    "channel": s.channel,
                    "confidence": s.confidence,
                    "no_speech_probability": s.no_speech_probability,
                    "avg_logprob": s.avg_logprob,
                    "words": [asdict(w) for w in s.words],
                }
                for s in self.segments
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        segments = tuple(
            Segment(
                text=s["text"],
                start=s["start"],
                end=s["end"],
                channel=s.get("channel"),
                confidence=s.get("confidence"),
                no_speech_probability=s.get("no_speech_probability"),
                avg_logprob=s.get("avg_logprob"),
                words=tuple(Word(**w) for w in s.get("words", [])),
            )
            for s in data["segments"]
        )
        return cls(
            segments=segments,
            language=data.get("language"),
            duration=data["duration"],
            channels=data.get("channels", 1),
            model=data.get("model"),
            language_confidence=data.get("language_confidence"),
        )


def merge_channel_transcripts(per_channel: list[Transcript]) -> Transcript:
    """One dialogue from per-channel transcripts: segments ordered by start time, each marked."""
    segments = [
        Segment(
            text=s.text,
            start=s.start,
            end=s.end,
            words=s.words,
            channel=index,
            confidence=s.confidence,
            no_speech_probability=s.no_speech_probability,
            avg_logprob=s.avg_logprob,
        )
        for index, transcript in enumerate(per_channel)
        for s in transcript.segments
    ]
    segments.sort(key=lambda s: (s.start, s.channel or 0))
    first = per_channel[0]
    return Transcript(
        segments=tuple(segments),
        language=first.language,
        duration=max(t.duration for t in per_channel),
        channels=len(per_channel),
        model=first.model,
        language_confidence=first.language_confidence,
    )


@dataclass(frozen=True)
class DecodedAudio:
    """16 kHz float32 samples, one array per channel that is transcribed apart."""

    channels: tuple[Any, ...] = field(repr=False)
    """numpy float32 arrays in [-1, 1], all at ``sample_rate_hz``."""
    sample_rate_hz: int
    duration: float
    """Seconds."""
    source_channels: int
    """Channels in the file as uploaded."""
    source_sample_rate_hz: int
    source_format: str
    """FFmpeg's container name (``wav``, ``mp3``, ``ogg``...)."""
    source_codec: str
