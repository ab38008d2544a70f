"""Speed and memory parts: the server against the pipeline called directly (same settings, same
run), latency, peak memory with a full queue, start-up time, the headline comparison with
faster-whisper's defaults, the configuration sweep, and whether batching helps."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from callpipe_asr.engines.faster_whisper import available_cores
from callpipe_asr.settings import Settings
from callpipe_asr.transcript import RecognitionOptions

from .baseline import BaselineProcess
from .direct import VOICEMAIL_OPTIONS, FasterWhisperDirect, Outcome, Pipeline, Request, Run, with_model, with_workers
from .evaluate import Totals, run_totals, total_of
from .isolated import PipelineProcess
from .server import MemoryStatus, ServerProcess, run_clients

CONCURRENCIES = (1, 2, 8)
SIZE_BUCKETS = ((0.0, 10.0, "< 10 s"), (10.0, 60.0, "10-60 s"), (60.0, float("inf"), "> 60 s"))


def latency_by_size(run: Run) -> dict[str, tuple[int, float, float]]:
    """Request size bucket -> (requests, p50, p95) of the latency clients saw, in seconds."""
    table = {}
    for low, high, label in SIZE_BUCKETS:
        latencies = sorted(o.latency for o in run.outcomes if low <= o.request.seconds < high)
        if latencies:
            table[label] = (len(latencies), percentile(latencies, 50), percentile(latencies, 95))
    return table


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    return float(np.percentile(np.asarray(sorted_values), pct))


@dataclass(frozen=True)
class Baseline:
    """faster-whisper called with its defaults (or with int8 weights) on the voicemail set."""

    label: str
    run: Run
    totals: Totals
    load_seconds: float


@dataclass
class ServerResults:
    ready_seconds: list[float] = field(default_factory=list)
    memory_idle: MemoryStatus | None = None
    memory_end: MemoryStatus | None = None
    server_runs: dict[int, Run] = field(default_factory=dict)
    direct_runs: dict[int, Run] = field(default_factory=dict)
    voicemail_run: Run | None = None
    baselines: list[Baseline] = field(default_factory=list)
    full_queue_run: Run | None = None


def measure_server(directory: Path, pipeline: Pipeline, workload: Sequence[Request], voicemails: Sequence[Request],
                   queue: Sequence[Request], restarts: int, environment: Mapping[str, str] | None) -> ServerResults:
    """Server and direct runs interleaved per concurrency (drift in the machine's load hits both),
    then the headline (voicemails through the server, interleaved file by file with faster-whisper's
    defaults, when ``environment`` is given for their processes), then a full queue; memory is
    read from the server's ``/proc`` status after start-up and at the end."""
    results = ServerResults()
    server = ServerProcess(directory / "server-0")
    try:
        results.ready_seconds.append(server.ready_seconds)
        results.memory_idle = server.memory()
        run_clients(server, "warm-up", workload[:1], 1)
        pipeline.run("warm-up", workload[:1], 1, VOICEMAIL_OPTIONS)
        for concurrency in CONCURRENCIES:
            results.server_runs[concurrency] = run_clients(server, f"server c={concurrency}", workload, concurrency)
            results.direct_runs[concurrency] = pipeline.run(f"direct c={concurrency}", workload, concurrency,
                                                             VOICEMAIL_OPTIONS)
        if environment is not None:
            results.voicemail_run, results.baselines = measure_headline(server, voicemails, environment)
        results.full_queue_run = run_clients(server, "full queue", queue, len(queue))
        results.memory_end = server.memory()
    finally:
        server.stop()
    for index in range(restarts):
        again = ServerProcess(directory / f"server-{index + 1}")
        results.ready_seconds.append(again.ready_seconds)
        again.stop()
    return results


BASELINES = (("faster-whisper defaults", None), ("faster-whisper defaults, int8", "int8"))
"""The headline's baselines: faster-whisper exactly as its README calls it (float16 weights
computed as float32, beam 5, no VAD), and the same with int8 weights, which separates what
quantisation buys from what the rest of our configuration buys."""


def measure_headline(server: ServerProcess, voicemails: Sequence[Request],
                     environment: Mapping[str, str]) -> tuple[Run, list[Baseline]]:
    """Each voicemail through the server (one client), then through each baseline, file by file,
    so changes in the machine's load hit all of them alike. A run's wall time is the sum of its
    requests' latencies (they ran one at a time)."""
    with contextlib.ExitStack() as stack:
        children = [(label, stack.enter_context(BaselineProcess(environment, compute_type)))
                    for label, compute_type in BASELINES]
        ours: list[Outcome] = []
        theirs: dict[str, list[Outcome]] = {label: [] for label, _ in children}
        for request in voicemails:
            ours.extend(run_clients(server, "headline", [request], 1).outcomes)
            for label, child in children:
                theirs[label].append(child.recognize(request))
        baselines = [Baseline(label, sequential(label, theirs[label]), total_of(theirs[label]), child.load_seconds)
                     for label, child in children]
    return sequential("server voicemail c=1", ours), baselines


def sequential(label: str, outcomes: Sequence[Outcome]) -> Run:
    """A run of requests made one after another, timed by their latencies."""
    return Run(label, 1, sum(o.latency for o in outcomes), tuple(outcomes))


@dataclass(frozen=True)
class SweepRow:
    label: str
    note: str
    totals: Totals
    run: Run
    latency_run: Run | None
    nonspeech_words: int
    """Words emitted on the non-speech recordings of the sweep."""


@dataclass(frozen=True)
class SweepConfig:
    """One alternative to the shipped defaults."""

    label: str
    note: str
    """What it changes."""
    transform: Callable[[Settings], Settings] = lambda settings: settings
    timed_alone: bool = False
    """Also time it one request at a time."""
    options: RecognitionOptions = VOICEMAIL_OPTIONS
    environment: Mapping[str, str | None] = field(default_factory=dict)
    """Process environment changes (None: unset); a row with any runs in a child process of its own."""


DEFAULT_OPENMP_SPINS = "300000"
"""libgomp's own spin count where nothing sets one (cut to 100 past the cores)."""


def sweep_configs(settings: Settings) -> list[SweepConfig]:
    """The alternatives to the defaults, each one change away from them."""
    model = settings.model()
    shipped = (settings.jobs.workers, model.cpu_threads or available_cores())
    configs = [SweepConfig("defaults", "as shipped", timed_alone=True)]
    for other_workers, threads in ((1, 2), (2, 1), (2, 2), (1, 4)):
        if (other_workers, threads) != shipped:
            configs.append(SweepConfig(f"workers {other_workers} x threads {threads}", "jobs.workers, cpu_threads",
                                       partial(_layout, workers=other_workers, threads=threads), True))
    configs += [
        SweepConfig("OpenMP passive waits", "OMP_WAIT_POLICY=PASSIVE (no spin)", timed_alone=True,
                    environment={"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}),
        SweepConfig("OpenMP's default waits", f"GOMP_SPINCOUNT={DEFAULT_OPENMP_SPINS}, no policy (libgomp's own)",
                    timed_alone=True, environment={"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": DEFAULT_OPENMP_SPINS}),
        SweepConfig("beam 5", "beam_size", lambda s: with_model(s, beam_size=5)),
        SweepConfig("no VAD", "vad_filter: false", lambda s: with_model(s, vad_filter=False)),
        SweepConfig("VAD as faster-whisper's defaults", "vad_speech_pad_ms 400, vad_min_speech_ms 0",
                    lambda s: with_model(s, vad_min_silence_ms=2000, vad_speech_pad_ms=400, vad_min_speech_ms=0)),
        SweepConfig("VAD cutting pauses from 1 s", "vad_min_silence_ms 1000", lambda s: with_model(s, vad_min_silence_ms=1000)),
        SweepConfig("segment times", "segment_timestamps: true (Whisper's timestamp tokens and its own seeking)",
                    timed_alone=True, options=dataclasses.replace(VOICEMAIL_OPTIONS, segment_timestamps=True)),
        SweepConfig("VAD threshold 0.35", "vad_threshold: 0.35", lambda s: with_model(s, vad_threshold=0.35)),
        SweepConfig("no temperature fallback", "temperatures: [0.0]", lambda s: with_model(s, temperatures=(0.0,))),
        SweepConfig("filters off", "no_speech_threshold 1, compression_ratio_threshold 100, max_ngram_repeats 0, "
                    "drop_known_hallucinations false", lambda s: with_model(
                        s, no_speech_threshold=1.0, compression_ratio_threshold=100.0, max_ngram_repeats=0,
                        drop_known_hallucinations=False)),
        SweepConfig("float32 weights", "compute_type: float32", lambda s: with_model(s, compute_type="float32")),
    ]
    return configs


def _layout(settings: Settings, workers: int, threads: int) -> Settings:
    return with_model(with_workers(settings, workers), cpu_threads=threads)


def measure_sweep(settings: Settings, requests: Sequence[Request], nonspeech: Sequence[Request], deadline: float,
                  environment: Mapping[str, str], configs: list[SweepConfig] | None = None
                  ) -> tuple[list[SweepRow], list[str]]:
    """Each configuration on the same speech requests at concurrency 8 (throughput), some also
    one request at a time (latency), and on ``nonspeech`` (words emitted). Rows that change the
    process environment run in a child started from ``environment`` (the benchmark's own, before
    our engine set anything) plus their changes. Stops at ``deadline``; returns the skipped."""
    rows, skipped = [], []
    for config in configs or sweep_configs(settings):
        if time.monotonic() > deadline:
            skipped.append(config.label)
            continue
        runner: Pipeline | PipelineProcess
        if config.environment:
            changed = {**environment, **config.environment}
            runner = PipelineProcess({k: v for k, v in changed.items() if v is not None}, settings.data_dir)
        else:
            runner = Pipeline(config.transform(settings))
        try:
            runner.run("warm-up", requests[:1], 1, config.options)
            run = runner.run(config.label, requests, 8, config.options)
            alone = runner.run(f"{config.label} c=1", requests, 1, config.options) if config.timed_alone else None
            silent = runner.run(f"{config.label} non-speech", nonspeech, 8, config.options)
        finally:
            runner.close()
        rows.append(SweepRow(config.label, config.note, run_totals(run), run, alone, run_totals(silent).words_emitted))
    return rows, skipped


@dataclass(frozen=True)
class BatchingResult:
    """faster-whisper's BatchedInferencePipeline (one recording's 30 s chunks decoded as a batch)
    against our pipeline on the same long recordings, and the encoder alone at batch 1 vs N."""

    ours: Run
    batched: list[tuple[int, Run, Totals]]
    encoder_ms_per_window: dict[int, float]


def measure_batching(settings: Settings, requests: Sequence[Request], batch_sizes: Sequence[int],
                     encoder_batch: int) -> BatchingResult:
    model = settings.model()
    pipeline = Pipeline(settings)
    try:
        pipeline.run("warm-up", requests[:1], 1)
        ours = pipeline.run("ours", requests, 1)
    finally:
        pipeline.close()
    direct = FasterWhisperDirect(model, settings.data_dir, batched=True, compute_type=model.compute_type,
                                 cpu_threads=model.cpu_threads)
    batched = []
    options: dict[str, Any] = {"beam_size": model.beam_size, "word_timestamps": True}
    for size in batch_sizes:
        run = direct.run(f"batched {size}", requests, batch_size=size, **options)
        batched.append((size, run, run_totals(run)))
    return BatchingResult(ours, batched, _encoder_timing(direct, requests[0], encoder_batch))


def _encoder_timing(direct: FasterWhisperDirect, request: Request, batch: int) -> dict[int, float]:
    """Milliseconds per 30 s window to run the encoder on ``batch`` windows one by one and as one
    batch: what batching several short concurrent requests could save at most on this CPU."""
    import ctranslate2
    from faster_whisper import decode_audio

    model: Any = direct.model
    samples = decode_audio(str(request.path), sampling_rate=16_000)[: 30 * 16_000]
    features = model.feature_extractor(samples)[:, : model.feature_extractor.nb_max_frames]
    features = np.pad(features, ((0, 0), (0, model.feature_extractor.nb_max_frames - features.shape[1])))
    single = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[np.newaxis]))
    stacked = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(features[np.newaxis], batch, axis=0)))
    model.model.encode(single)  # warm-up
    timings = {}
    for size, view, calls in ((1, single, batch), (batch, stacked, 1)):
        started = time.perf_counter()
        for _ in range(calls):
            model.model.encode(view)
        timings[size] = (time.perf_counter() - started) * 1000 / batch
    return timings


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
