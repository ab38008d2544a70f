"""Whisper through faster-whisper (CTranslate2): the default engine, on CPU or CUDA.

Speech detection runs here, before the model: the Silero VAD that faster-whisper ships finds the
speech, only that audio (joined, with a little padding) is decoded, and the segments' times are
mapped back onto the recording. A recording with no speech at all never reaches the model, so
silence, music on hold and line noise cost a VAD pass and produce no words; long pauses in a
voicemail cost nothing either.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from ..settings import ModelSettings
from ..transcript import RecognitionOptions, Segment, Task, Transcript, Word
from .openmp import spin_briefly_then_sleep
from .speech_windows import clip_timestamps, plan_windows, region_ends

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number for the mmap threshold."""
MMAP_THRESHOLD_BYTES = 256 * 1024
FRAMES_PER_WINDOW = 3000
"""Mel frames in Whisper's 30 s input window."""
EDGE_TOLERANCE_SECONDS = 0.02
"""Two mel frames: how near a region boundary a segment edge may fall and still be taken for it."""
VAD_BLOCK_SECONDS = 30
"""Seconds of audio per VAD pass: bounds its memory; a block boundary costs the VAD nothing
measurable (its state restarts, and regions meeting there are joined)."""


class FasterWhisperEngine:
    """One loaded CTranslate2 Whisper model, shared by every worker thread of the process."""

    def __init__(self, name: str, model_path: Path, settings: ModelSettings, concurrency: int = 1) -> None:
        spin_briefly_then_sleep()
        from faster_whisper import WhisperModel  # imported here: only this engine needs it
        from faster_whisper.vad import VadOptions, get_vad_model

        self.name = name
        self._settings = settings
        threads = settings.cpu_threads or available_cores()
        self._vad_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"vad-{name}") if threads > 1 else None
        self._vad_options = VadOptions(
            threshold=settings.vad_threshold,
            min_speech_duration_ms=settings.vad_min_speech_ms,
            min_silence_duration_ms=settings.vad_min_silence_ms,
            speech_pad_ms=settings.vad_speech_pad_ms,
        )
        keep_large_buffers_out_of_the_heap()
        started = time.perf_counter()
        try:
            self._model = WhisperModel(
                str(model_path),
                device=settings.device,
                device_index=settings.device_index,
                compute_type=settings.compute_type,
                cpu_threads=settings.cpu_threads or available_cores(),
                num_workers=max(1, concurrency),
                local_files_only=True,
            )
            if settings.vad_filter:
                get_vad_model()  # load the VAD now, not in the first request
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineError(f"model '{name}' could not be loaded from {model_path}: {exc}") from exc
        self.multilingual = bool(self._model.model.is_multilingual)
        if settings.device == "cuda":
            self._check_cuda()
        log.info("model %s loaded from %s in %.2f s (%s, %s)", name, model_path,
                 time.perf_counter() - started, settings.device, settings.compute_type)

    def _check_cuda(self) -> None:
        """Run one tiny inference on the GPU now: CTranslate2 loads cuBLAS and cuDNN only at the
        first inference, so a missing library fails the model's load with the reason, not the
        first request."""
        import ctranslate2

        from .devices import GPU_HINT

        features = np.zeros((1, self._model.model.n_mels, FRAMES_PER_WINDOW), dtype=np.float32)
        try:
            self._model.model.encode(ctranslate2.StorageView.from_array(features))
        except RuntimeError as exc:
            raise EngineError(f"model '{self.name}' loaded on CUDA but cannot run there ({exc}): {GPU_HINT}") from exc

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        language = options.language if self.multilingual else "en"
        task = options.task.value if self.multilingual else Task.TRANSCRIBE.value
        duration = len(samples) / SAMPLE_RATE_HZ
        speech = self.speech_regions(samples) if self._settings.vad_filter else None
        if speech is not None and not speech:
            log.debug("no speech in %.1f s of audio: the model is not run", duration)
            return Transcript(segments=(), language=language, duration=duration, model=self.name)
        audio = _join(samples, speech) if speech else samples
        text_only = self.decodes_text_only(options)
        # With words, faster-whisper moves on from each window's last word, not its end: planned
        # windows would have their tails decoded again as windows of their own.
        planned = text_only and not options.word_timestamps
        clips = clip_timestamps(plan_windows(audio, region_ends(speech or ()))) if planned else "0"
        try:
            segments_iter, info = self._model.transcribe(
                audio,
                language=language,
                task=task,
                beam_size=self._settings.beam_size,
                initial_prompt=options.prompt or None,
                hotwords=" ".join(options.hotwords) or None,
                word_timestamps=options.word_timestamps,
                without_timestamps=text_only,
                clip_timestamps=clips,
                vad_filter=False,  # done above, once, with the telephone settings
                temperature=options.temperature if options.temperature is not None else list(self._settings.temperatures),
                no_speech_threshold=self._settings.no_speech_threshold,
                log_prob_threshold=self._settings.log_prob_threshold,
                compression_ratio_threshold=self._settings.compression_ratio_threshold,
                condition_on_previous_text=False,
            )
            timeline = _Timeline(speech) if speech else None
            segments = tuple(_segment(s, timeline) for s in segments_iter)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"recognition failed: {exc}") from exc
        if speech:
            log.debug("VAD kept %.1f of %.1f s in %d regions", len(audio) / SAMPLE_RATE_HZ, duration, len(speech))
        return Transcript(segments=segments, language=info.language, duration=duration, model=self.name)

    def decodes_text_only(self, options: RecognitionOptions) -> bool:
        """Whether Whisper decodes without timestamp tokens: when the client wants neither words
        nor segment times (about 5 % faster on voicemail, the same words; in windows planned at
        pauses, :mod:`.speech_windows`), or when ``without_timestamps`` says so for every request
        (where words are asked for, they come from the alignment pass, and faster-whisper moves
        from window to window by the last word). Segments then span a window's speech, their
        times only as fine as the VAD's regions."""
        return self._settings.without_timestamps or not (options.word_timestamps or options.segment_timestamps)

    def speech_regions(self, samples: Any) -> list[dict[str, int]]:
        """Sample ranges (``start``, ``end``) the Silero VAD hears speech in, padded; [] for none.

        The VAD runs block by block (:data:`VAD_BLOCK_SECONDS`): faster-whisper's runs the whole
        recording through the model as one batch, whose buffers grow with its length (about
        110 MB more peak memory for 5 minutes, per worker). Regions that meet at a block
        boundary, or that a pause shorter than ``vad_min_silence_ms`` parts there, are joined,
        so speech across it stays one region, none of it lost. The blocks are independent,
        so they run side by side on the engine's cores (the Silero session uses one thread).
        """
        from faster_whisper.vad import get_speech_timestamps

        block = VAD_BLOCK_SECONDS * SAMPLE_RATE_HZ
        offsets = range(0, len(samples), block)

        def detect(offset: int) -> list[dict[str, int]]:
            return get_speech_timestamps(samples[offset:offset + block], self._vad_options, sampling_rate=SAMPLE_RATE_HZ)

        per_block = self._vad_pool.map(detect, offsets) if self._vad_pool and len(offsets) > 1 else map(detect, offsets)
        bridged = self._settings.vad_min_silence_ms * SAMPLE_RATE_HZ // 1000
        regions: list[dict[str, int]] = []
        for offset, found in zip(offsets, per_block):
            for index, region in enumerate(found):
                start, end = region["start"] + offset, region["end"] + offset
                # The VAD bridges any pause shorter than its silence limit; across a block
                # boundary it could not see the other side, so a gap there is bridged here.
                limit = bridged if index == 0 else 0
                if regions and start - regions[-1]["end"] <= limit:
                    regions[-1]["end"] = max(regions[-1]["end"], end)
                else:
                    regions.append({"start": start, "end": end})
        return regions

    def detect_language(self, samples: Any) -> list[tuple[str, float]]:
        """(code, probability) for every language the model knows, most likely first, judged on
        the speech the VAD finds (Whisper looks at its first 30 s); [] for an English-only model
        or no speech. The pipeline restricts and thresholds these (:mod:`..languages`)."""
        if not self.multilingual or len(samples) == 0:
            return []
        speech = self.speech_regions(samples) if self._settings.vad_filter else None
        if speech is not None and not speech:
            return []
        audio = _join(samples, speech) if speech else samples
        try:
            _, _, probabilities = self._model.detect_language(audio)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"language detection failed: {exc}") from exc
        return [(str(code), float(probability)) for code, probability in probabilities]

    def close(self) -> None:
        if self._vad_pool is not None:
            self._vad_pool.shutdown(wait=True)
        del self._model


def keep_large_buffers_out_of_the_heap() -> None:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES`.

    Each recognition allocates and frees tens of megabytes of short-lived buffers (decoded audio,
    VAD and mel features). glibc raises its mmap threshold each time such a buffer is freed (up to
    32 MiB), so later ones come from the heap, where freed memory stays resident: a server's
    peak RSS grew from 350 to 500 MiB over a benchmark run. A fixed threshold keeps them mapped
    and returned on free. Process-wide and idempotent; nothing happens where libc is not glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        log.debug("not glibc: the mmap threshold is left as it is")


def available_cores() -> int:
    """The cores this process may run on: what ``cpu_threads: 0`` means (CTranslate2's own 0 stops
    at 4 threads, leaving the rest of a larger machine idle)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _join(samples: Any, regions: list[dict[str, int]]) -> Any:
    """The speech regions back to back: what the model hears instead of the whole recording."""
    return np.concatenate([samples[region["start"]:region["end"]] for region in regions])


class _Timeline:
    """Maps times in the joined speech back to times in the recording.

    A word belongs to the region its middle falls in, so both its ends move by the same amount
    (faster-whisper's own rule); a segment without words maps its start and end apart.
    """

    def __init__(self, regions: list[dict[str, int]]) -> None:
        self._ends: list[float] = []
        self._shifts: list[float] = []
        joined_end = 0
        removed = 0
        previous_end = 0
        for region in regions:
            removed += region["start"] - previous_end
            previous_end = region["end"]
            joined_end = region["end"] - removed
            self._ends.append(joined_end / SAMPLE_RATE_HZ)
            self._shifts.append(removed / SAMPLE_RATE_HZ)

    def shift(self, joined_time: float, is_end: bool = False) -> float:
        """Seconds of removed audio before ``joined_time``'s region."""
        for end, shift in zip(self._ends, self._shifts, strict=True):
            if joined_time < end or (is_end and joined_time <= end):
                return shift
        return self._shifts[-1]

    def original(self, joined_time: float, is_end: bool = False) -> float:
        """A segment's start or end in the recording. An edge within :data:`EDGE_TOLERANCE_SECONDS`
        of a region boundary belongs to the region it bounds: a window planned at a boundary
        starts on the mel frame before it, and seconds count frames in floating point."""
        probe = joined_time - EDGE_TOLERANCE_SECONDS if is_end else joined_time + EDGE_TOLERANCE_SECONDS
        return joined_time + self.shift(probe, is_end)


def _segment(raw: Any, timeline: _Timeline | None) -> Segment:
    words = tuple(_word(w, timeline) for w in (raw.words or ()))
    confidence = sum(w.confidence or 0.0 for w in words) / len(words) if words else None
    if timeline is None:
        start, end = raw.start, raw.end
    elif words:
        start, end = words[0].start, words[-1].end
    else:
        start, end = timeline.original(raw.start), timeline.original(raw.end, is_end=True)
    return Segment(
        text=raw.text,
        start=round(float(start), 3),
        end=round(float(end), 3),
        words=words,
        confidence=round(confidence, 4) if confidence is not None else None,
        no_speech_probability=round(float(raw.no_speech_prob), 4),
        avg_logprob=round(float(raw.avg_logprob), 4),
    )


def _word(raw: Any, timeline: _Timeline | None) -> Word:
    shift = timeline.shift((raw.start + raw.end) / 2) if timeline is not None else 0.0
    return Word(
        text=raw.word,
        start=round(float(raw.start) + shift, 3),
        end=round(float(raw.end) + shift, 3),
        confidence=round(float(raw.probability), 4),
    )
