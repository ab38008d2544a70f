"""Where to cut speech into Whisper's 30 s windows when the model decodes text only.

Whisper hears at most 30 s at a time. With timestamp tokens it finds its own cut: it ends each
window at the last segment it completed and starts the next window there, which re-reads the
window's tail and spends tokens on times. A client that shows only the text (the voicemail
e-mail, FusionPBX's plain reply, OpenAI's ``json``) needs neither, so the engine decodes without
timestamp tokens, one window after another. A window that ends mid-word would garble that word
on both sides, so the windows are planned here, before decoding: each ends where one speech
region ends and the next begins (the VAD found silence there), or, inside a region longer than
a window, at the quietest moment of its last seconds (a pause between words).

Pure numpy on the joined speech (the regions back to back), so it is tested without a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

SAMPLE_RATE_HZ = 16_000
WINDOW_SAMPLES = 30 * SAMPLE_RATE_HZ
"""Whisper's input window."""
FRAME_SAMPLES = SAMPLE_RATE_HZ // 100
"""One mel frame (10 ms): window edges fall on whole frames, as faster-whisper counts them."""
PAUSE_SEARCH_SAMPLES = 8 * SAMPLE_RATE_HZ
"""How far back from a window's end to look for a cut: a region boundary there, else the
quietest moment. Eight seconds hold several pauses in any speech, and keep windows at least
22 s full, so long speech costs no more windows than Whisper's own seeking would."""
PAUSE_SAMPLES = 10 * FRAME_SAMPLES
"""The span whose energy is compared when looking for the quietest moment (100 ms: a short
pause between words; a shorter span finds the closure inside a plosive)."""


@dataclass(frozen=True)
class Window:
    """One decoding window, in samples of the joined speech."""

    start: int
    end: int

    @property
    def seconds(self) -> tuple[float, float]:
        return self.start / SAMPLE_RATE_HZ, self.end / SAMPLE_RATE_HZ


def plan_windows(speech: Any, region_ends: Sequence[int] = ()) -> list[Window]:
    """Windows of at most 30 s covering ``speech`` (16 kHz samples) end to end.

    ``region_ends`` are the sample offsets in ``speech`` where one VAD region ends and the next
    begins: the preferred cuts. A window ends at the last such cut within its final
    :data:`PAUSE_SEARCH_SAMPLES`; where none is there, at the quietest moment of that stretch.
    """
    total = len(speech)
    cuts = sorted(end for end in region_ends if 0 < end < total)
    windows: list[Window] = []
    start = 0
    while total - start > WINDOW_SAMPLES:
        limit = _frame_floor(start + WINDOW_SAMPLES)
        earliest = limit - PAUSE_SEARCH_SAMPLES
        at_boundaries = [cut for cut in cuts if earliest <= cut <= limit]
        cut = _frame_floor(at_boundaries[-1]) if at_boundaries else quietest_moment(speech, earliest, limit)
        windows.append(Window(start, cut))
        start = cut
    if total > start:
        windows.append(Window(start, total))
    return windows


def quietest_moment(speech: Any, earliest: int, latest: int) -> int:
    """The frame-aligned sample offset in ``[earliest, latest]`` at the middle of the
    :data:`PAUSE_SAMPLES` span with the least energy: the best place to cut running speech."""
    earliest = max(0, _frame_floor(earliest))
    latest = _frame_floor(min(latest, len(speech)))
    frames = (latest - earliest) // FRAME_SAMPLES
    if frames <= 0:
        return latest
    stretch = np.asarray(speech[earliest:earliest + frames * FRAME_SAMPLES], dtype=np.float32)
    energy = np.square(stretch).reshape(frames, FRAME_SAMPLES).mean(axis=1)
    span = min(PAUSE_SAMPLES // FRAME_SAMPLES, frames)
    smoothed = np.convolve(energy, np.ones(span, dtype=np.float32) / span, mode="valid")
    quietest = int(np.argmin(smoothed))  # the first of equals: a silent stretch is cut early
    return earliest + (quietest + span // 2) * FRAME_SAMPLES


def region_ends(regions: Sequence[dict[str, int]]) -> list[int]:
    """Where each VAD region ends once the regions are joined back to back."""
    ends: list[int] = []
    joined = 0
    for region in regions:
        joined += region["end"] - region["start"]
        ends.append(joined)
    return ends


def clip_timestamps(windows: Sequence[Window]) -> list[float]:
    """faster-whisper's ``clip_timestamps``: each window's start and end, in seconds."""
    return [edge for window in windows for edge in window.seconds]


def _frame_floor(sample: int) -> int:
    return sample - sample % FRAME_SAMPLES
