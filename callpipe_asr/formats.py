"""Plain-text and subtitle renderings of a :class:`Transcript` (``.txt``, ``.srt``, ``.vtt``).

Written by hand: both subtitle formats are a few lines of timestamp formatting, and the
libraries for them would add a dependency to do less.
"""

from __future__ import annotations

from .transcript import Segment, Transcript


def to_text(transcript: Transcript) -> str:
    return transcript.text + "\n" if transcript.text else ""


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{index}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{_cue_text(s)}\n"
        for index, s in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{_vtt_escape(_cue_text(s))}\n" for s in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    """WebVTT cue text is markup: ``&``, ``<`` and ``>`` must be character references."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cues(transcript: Transcript) -> list[Segment]:
    return [s for s in transcript.segments if s.text.strip()]


def _cue_text(segment: Segment) -> str:
    text = segment.text.strip().replace("-->", "->")
    return f"[channel {segment.channel}] {text}" if segment.channel is not None else text


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
