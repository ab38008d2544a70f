"""Recognition in this process, without the server: our pipeline with given settings, the same
engine fed faster-whisper's own decoding, and faster-whisper called the way its README does.

Every runner returns :class:`Outcome` records so the server's and the direct runs are scored
and timed alike.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from callpipe_asr.engines import ModelRegistry
from callpipe_asr.errors import CallpipeError
from callpipe_asr.engines.registry import model_path
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.postprocess import FilterPolicy, clean_transcript
from callpipe_asr.settings import ModelSettings, Settings
from callpipe_asr.transcript import RecognitionOptions, Segment, Transcript, Word

from .corpus import Recording

SERVER_OPTIONS = RecognitionOptions()
"""What the native API asks for when a client sends only a file: word timestamps included (the
accuracy part needs them: a composite's sentences are found by their words' times)."""
VOICEMAIL_OPTIONS = RecognitionOptions(word_timestamps=False, segment_timestamps=False)
"""What the voicemail paths ask for (the FreeSWITCH Lua sends ``word_timestamps=false`` and
``segment_timestamps=false``; FusionPBX's text replies imply both): text only. The speed parts
measure this."""


@dataclass(frozen=True)
class Request:
    recording: Recording
    codec: str
    path: Path

    @property
    def seconds(self) -> float:
        return self.recording.duration


@dataclass(frozen=True)
class Outcome:
    request: Request
    transcript: Transcript
    latency: float
    """Seconds from sending (or calling) to the result."""
    error: str | None = None
    """Why recognition failed (the transcript is then empty, and scored as such)."""


def failed(request: Request, error: str, latency: float) -> Outcome:
    """A failure kept as a result: it counts as an empty transcript and is listed in the report."""
    return Outcome(request, Transcript(segments=(), language=None, duration=request.seconds), latency, error)


@dataclass(frozen=True)
class Run:
    """A workload run at one concurrency: its outcomes and its wall time."""

    label: str
    concurrency: int
    wall: float
    outcomes: tuple[Outcome, ...]
    cpu_seconds: float | None = None
    """CPU time (user + system) the recognising process spent, where it is this process: less
    sensitive than wall time to other work on a shared machine."""

    @property
    def audio_seconds(self) -> float:
        return sum(o.request.seconds for o in self.outcomes)

    @property
    def throughput(self) -> float:
        """Audio seconds recognised per wall-clock second."""
        return self.audio_seconds / self.wall if self.wall > 0 else 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def rtf(self) -> float:
        """Wall seconds per audio second over the whole run (1 / throughput)."""
        return self.wall / self.audio_seconds if self.audio_seconds else 0.0


def run_concurrently(label: str, requests: Sequence[Request], concurrency: int,
                     call: Callable[[Request], Transcript]) -> Run:
    """Each request through ``call`` with ``concurrency`` requests in flight, in order."""

    def timed(request: Request) -> Outcome:
        started = time.perf_counter()
        try:
            transcript = call(request)
        except CallpipeError as exc:
            return failed(request, f"{exc.code}: {exc.message}", time.perf_counter() - started)
        return Outcome(request, transcript, time.perf_counter() - started)

    started, cpu_started = time.perf_counter(), _cpu_seconds()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = tuple(pool.map(timed, requests))
    return Run(label, concurrency, time.perf_counter() - started, outcomes, _cpu_seconds() - cpu_started)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Pipeline:
    """Our recognition pipeline (decode, VAD, model, filters) in this process: the "engine called
    directly" the server is compared with, and the subject of the configuration sweep."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        started = time.perf_counter()
        self._registry = ModelRegistry(settings, concurrency=settings.jobs.workers)
        self._engine = self._registry.get(settings.default_model)
        self.load_seconds = time.perf_counter() - started
        self._recognizer = Recognizer(settings, self._registry)
        self._policy = FilterPolicy.from_model_settings(settings.model())

    def recognize(self, request: Request, options: RecognitionOptions = SERVER_OPTIONS) -> Transcript:
        return self._recognizer.recognize(request.path.read_bytes(), None, options, job_id=request.recording.id)

    def recognize_own_decode(self, request: Request, options: RecognitionOptions = SERVER_OPTIONS) -> Transcript:
        """The same engine and filters, fed faster-whisper's ``decode_audio`` of the same file
        instead of our decoder and resampler: the fidelity reference."""
        from faster_whisper import decode_audio

        samples = decode_audio(str(request.path), sampling_rate=16_000)
        return clean_transcript(self._engine.transcribe(samples, options), self._policy)

    def run(self, label: str, requests: Sequence[Request], concurrency: int,
            options: RecognitionOptions = SERVER_OPTIONS) -> Run:
        """Like the server: ``concurrency`` callers, at most ``jobs.workers`` recognising at once."""
        return run_concurrently(label, requests, min(concurrency, self.settings.jobs.workers),
                                lambda request: self.recognize(request, options))

    def close(self) -> None:
        self._registry.close()


def with_model(settings: Settings, **changes: Any) -> Settings:
    """The settings with the default model's settings changed (for the sweep)."""
    model = dataclasses.replace(settings.model(), **changes)
    return dataclasses.replace(settings, models={**settings.models, settings.default_model: model})


def with_workers(settings: Settings, workers: int) -> Settings:
    return dataclasses.replace(settings, jobs=dataclasses.replace(settings.jobs, workers=workers))


class FasterWhisperDirect:
    """faster-whisper as its README calls it: ``WhisperModel(path)`` and ``transcribe(file)``,
    with only what is given changed. The headline's baseline (its defaults: float16 weights run
    as float32 on the CPU, beam 5, no VAD, temperature fallback) and the batched pipeline."""

    def __init__(self, model: ModelSettings, data_dir: Path, batched: bool = False, **load: Any) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        started = time.perf_counter()
        self._model = WhisperModel(str(model_path(model.source, data_dir)), local_files_only=True, **load)
        self._pipeline: Any = BatchedInferencePipeline(self._model) if batched else self._model
        self.load_seconds = time.perf_counter() - started

    @property
    def model(self) -> Any:
        """The WhisperModel itself (the encoder timing reaches into it)."""
        return self._model

    def recognize(self, request: Request, **options: Any) -> Transcript:
        return self.recognize_path(request.path, **options)

    def recognize_path(self, path: Path, **options: Any) -> Transcript:
        segments, info = self._pipeline.transcribe(str(path), language="en", **options)
        return Transcript(segments=tuple(_segment(s) for s in segments), language=info.language,
                          duration=info.duration)

    def run(self, label: str, requests: Sequence[Request], **options: Any) -> Run:
        return run_concurrently(label, requests, 1, lambda request: self.recognize(request, **options))


def _segment(raw: Any) -> Segment:
    words = tuple(Word(w.word, float(w.start), float(w.end), float(w.probability)) for w in (raw.words or ()))
    return Segment(text=raw.text, start=float(raw.start), end=float(raw.end), words=words,
                   no_speech_probability=float(raw.no_speech_prob), avg_logprob=float(raw.avg_logprob))
