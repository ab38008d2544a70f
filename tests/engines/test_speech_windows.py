"""Planning Whisper's text-only windows: cut where the speech detection found silence, else in
the quietest moment, never past 30 s. Pure numpy, no model."""

from __future__ import annotations

import numpy as np
import pytest

from callpipe_asr.engines.speech_windows import (
    FRAME_SAMPLES,
    PAUSE_SEARCH_SAMPLES,
    SAMPLE_RATE_HZ,
    WINDOW_SAMPLES,
    Window,
    clip_timestamps,
    plan_windows,
    quietest_moment,
    region_ends,
)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise at speech level: no moment quieter than another by chance alone."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE_HZ))).astype(np.float32)


def with_gap(samples: np.ndarray, at_seconds: float, gap_seconds: float = 0.15) -> np.ndarray:
    quiet = samples.copy()
    start = int(at_seconds * SAMPLE_RATE_HZ)
    quiet[start:start + int(gap_seconds * SAMPLE_RATE_HZ)] *= 0.01
    return quiet


def assert_tiles(windows: list[Window], total: int) -> None:
    """Contiguous, from 0 to the end, each at most 30 s and starting on a mel frame."""
    assert windows[0].start == 0 and windows[-1].end == total
    for before, after in zip(windows, windows[1:]):
        assert before.end == after.start
    for window in windows:
        assert 0 < window.end - window.start <= WINDOW_SAMPLES
        assert window.start % FRAME_SAMPLES == 0


@pytest.mark.parametrize("seconds", [0.3, 12.0, 30.0])
def test_up_to_30_seconds_is_one_window(seconds: float) -> None:
    speech = speech_like(seconds)
    assert plan_windows(speech, [len(speech) // 2]) == [Window(0, len(speech))]


def test_a_window_ends_where_a_region_ends() -> None:
    """Three 12 s regions: the first window takes two of them whole (24 s), not 30 s of speech
    cut inside the third."""
    speech = speech_like(36.0)
    ends = region_ends([{"start": 0, "end": 12 * SAMPLE_RATE_HZ}, {"start": 20 * SAMPLE_RATE_HZ, "end": 32 * SAMPLE_RATE_HZ},
                        {"start": 40 * SAMPLE_RATE_HZ, "end": 52 * SAMPLE_RATE_HZ}])
    assert ends == [12 * SAMPLE_RATE_HZ, 24 * SAMPLE_RATE_HZ, 36 * SAMPLE_RATE_HZ]
    assert plan_windows(speech, ends) == [Window(0, 24 * SAMPLE_RATE_HZ), Window(24 * SAMPLE_RATE_HZ, len(speech))]


def test_a_region_boundary_too_early_is_not_used() -> None:
    """A region ending 5 s in would waste most of a window: the cut is made in the quietest
    moment of the long region instead, the pause at 27 s."""
    speech = with_gap(speech_like(50.0, seed=1), at_seconds=27.0)
    windows = plan_windows(speech, [5 * SAMPLE_RATE_HZ])
    assert_tiles(windows, len(speech))
    assert len(windows) == 2
    assert 27.0 <= windows[0].end / SAMPLE_RATE_HZ <= 27.15


def test_running_speech_is_cut_in_its_pauses() -> None:
    """Two minutes of one region with a short pause every 4.5 s: every cut falls in a pause."""
    pauses = [4.5 * i for i in range(1, 27)]
    speech = speech_like(120.0, seed=2)
    for at in pauses:
        speech = with_gap(speech, at)
    windows = plan_windows(speech)
    assert_tiles(windows, len(speech))
    assert len(windows) == 5  # 120 s in windows of at least 22 s
    for window in windows[:-1]:
        cut = window.end / SAMPLE_RATE_HZ
        assert any(at <= cut <= at + 0.15 for at in pauses), cut


def test_windows_always_tile_the_speech() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        seconds = float(rng.uniform(0.1, 400.0))
        speech = speech_like(seconds, seed=int(rng.integers(1_000)))
        ends = sorted(set(int(x) for x in rng.integers(1, len(speech), size=int(rng.integers(0, 30)))))
        windows = plan_windows(speech, ends)
        assert_tiles(windows, len(speech))
        # never more than one window per 22 s (the search span), and the fewest that fit beside it
        assert len(windows) <= 1 + int(len(speech) / (WINDOW_SAMPLES - PAUSE_SEARCH_SAMPLES))


def test_silence_is_cut_at_its_start_and_a_gap_at_its_middle() -> None:
    silent = np.zeros(10 * SAMPLE_RATE_HZ, dtype=np.float32)
    assert quietest_moment(silent, 2 * SAMPLE_RATE_HZ, 8 * SAMPLE_RATE_HZ) == 2 * SAMPLE_RATE_HZ + 5 * FRAME_SAMPLES
    speech = with_gap(speech_like(10.0), at_seconds=6.0, gap_seconds=0.3)
    cut = quietest_moment(speech, 2 * SAMPLE_RATE_HZ, 8 * SAMPLE_RATE_HZ)
    assert 6.0 <= cut / SAMPLE_RATE_HZ <= 6.3 and cut % FRAME_SAMPLES == 0
    assert quietest_moment(speech, 5 * SAMPLE_RATE_HZ, 5 * SAMPLE_RATE_HZ) == 5 * SAMPLE_RATE_HZ


def test_clip_timestamps_are_the_window_edges_in_seconds() -> None:
    windows = [Window(0, 24 * SAMPLE_RATE_HZ), Window(24 * SAMPLE_RATE_HZ, 36 * SAMPLE_RATE_HZ + 160)]
    assert clip_timestamps(windows) == [0.0, 24.0, 24.0, 36.01]


def test_a_window_edge_at_a_region_boundary_maps_to_that_region() -> None:
    """A text-only segment starts on the mel frame before the boundary its window was cut at (and
    seconds count frames in floating point): it still starts where the next region's speech
    does, not at the end of the previous one with the whole removed pause in between."""
    from callpipe_asr.engines.faster_whisper import _Timeline

    regions = [{"start": 0, "end": 400_032}, {"start": 800_000, "end": 1_200_000}]  # 0-25.002 s, 50-75 s
    timeline = _Timeline(regions)
    cut = plan_windows(speech_like(50.002), region_ends(regions))[0].end / SAMPLE_RATE_HZ
    assert cut == 25.0  # the frame before the boundary at 25.002 s of joined speech
    assert timeline.original(cut) == pytest.approx(50.0 - 0.002, abs=1e-6)
    assert timeline.original(cut, is_end=True) == pytest.approx(cut, abs=1e-6)
    assert timeline.original(25.002 + 1e-12, is_end=True) == pytest.approx(25.002, abs=1e-6)
    assert timeline.original(12.0) == 12.0 and timeline.original(40.0) == pytest.approx(64.998, abs=1e-6)
