"""The benchmark's one command: ``./scripts/bench`` (``.venv/bin/python -m bench.run``).

It installs the Debian packages it reads, builds (or reuses) ``bench/corpus/``, and measures, in
this order, each part bounded by the corpus size and a time budget:

1. accuracy: WER by codec and container on single prompts, voicemails and long voicemails; words
   emitted on non-speech; sentences kept and words written after the speech in composites; our
   decoder against faster-whisper's ``decode_audio`` (same engine, same files);
2. the server: a real ``callpipe-asr serve`` on 127.0.0.1, at 1, 2 and 8 concurrent clients,
   interleaved with the pipeline called directly with the same settings; latency by request
   size; peak RSS (VmHWM) after a full queue; time from start to ready;
3. the headline: voicemail through the server against faster-whisper with its defaults (beam 5,
   no VAD) on the same files in the same run;
4. the configuration sweep (workers x threads, beam, VAD, timestamps, fallback, weights) and
   batching (faster-whisper's BatchedInferencePipeline, the encoder at batch 1 vs 4).

It writes ``bench/RESULTS.md`` (``--quick``: ``bench/out/RESULTS-quick.md``) and the raw figures
as JSON under ``bench/out/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from callpipe_asr.settings import Settings, load_settings

from . import audio, report
from .accuracy import (AccuracyResults, Fidelity, VadMargin, measure_accuracy, measure_fidelity, measure_vad_margin,
                       requests_for, words_on_nonspeech)
from .baseline import BaselineProcess
from .corpus import FULL, QUICK, Corpus, CorpusSpec, build_corpus
from .deps import ensure_packages
from .direct import Pipeline, Request
from .machine import Machine, describe_machine, load_average, wait_for_quiet
from .speed import BatchingResult, ServerResults, SweepRow, measure_batching, measure_server, measure_sweep

BENCH_DIR = Path(__file__).resolve().parent
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """How much of the corpus each part uses (``--quick`` or full)."""

    spec: CorpusSpec
    workload_prompts: int
    workload_voicemails: int
    workload_long: int
    sweep_prompts: int
    sweep_voicemails: int
    sweep_long: int
    restarts: int
    nonspeech_baseline: int
    fidelity_codecs: tuple[str, ...]
    long_codecs: tuple[str, ...]
    """Codecs the long voicemails are scored in (every codec would double the accuracy part)."""
    queue_depth: int | None
    """Requests sent at once for the memory peak; None: ``jobs.max_queued`` (a full queue)."""
    budget_seconds: float


QUICK_PLAN = Plan(QUICK, workload_prompts=8, workload_voicemails=3, workload_long=0, sweep_prompts=4,
                  sweep_voicemails=2, sweep_long=0, restarts=1, nonspeech_baseline=3, fidelity_codecs=("pcm-8k",),
                  long_codecs=("pcm-8k", "gsm"), queue_depth=24, budget_seconds=15 * 60)
FULL_PLAN = Plan(FULL, workload_prompts=16, workload_voicemails=4, workload_long=1, sweep_prompts=6,
                 sweep_voicemails=2, sweep_long=1, restarts=2, nonspeech_baseline=8, fidelity_codecs=("pcm-8k", "gsm"),
                 long_codecs=("pcm-8k", "mulaw", "alaw", "gsm"), queue_depth=None, budget_seconds=25 * 60)


@dataclass
class Results:
    """Everything the report shows."""

    mode: str
    machine: Machine
    settings: Settings
    corpus: Corpus | None = None
    accuracy: AccuracyResults | None = None
    fidelity: list[Fidelity] = field(default_factory=list)
    vad_margin: VadMargin | None = None
    server: ServerResults | None = None
    baseline_nonspeech: tuple[int, int, list[Any]] | None = None
    """(recordings, words emitted, which) for faster-whisper's defaults on non-speech."""
    sweep: list[SweepRow] = field(default_factory=list)
    batching: BatchingResult | None = None
    part_seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    load_end: tuple[float, float, float] | None = None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environment = dict(os.environ)  # before our engine sets anything: the baselines run with this
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    installed = ensure_packages()
    waited = wait_for_quiet(args.wait_quiet * 60, args.quiet_load, _say) if args.wait_quiet > 0 else None
    output = args.output or (BENCH_DIR / "out" / "RESULTS-quick.md" if args.quick else BENCH_DIR / "RESULTS.md")
    started = time.monotonic()
    deadline = started + plan.budget_seconds
    with tempfile.TemporaryDirectory(prefix="callpipe-bench-") as scratch:
        settings = load_settings(None, environ={}, overrides={"data_dir": Path(scratch) / "data"})
        results = Results("quick" if args.quick else "full", describe_machine(installed, waited), settings)
        _run_parts(results, plan, args, Path(scratch), deadline, environment)
    results.load_end = load_average()
    results.part_seconds["total"] = time.monotonic() - started
    report.write_section(output, report.render(results, " ".join(["./scripts/bench", *(argv or sys.argv[1:])])))
    raw = BENCH_DIR / "out" / f"results-{results.mode}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(report.raw(results), indent=1, default=str))
    _say(f"wrote {output} and {raw} in {results.part_seconds['total']:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="callpipe-asr benchmark (writes bench/RESULTS.md)")
    parser.add_argument("--quick", action="store_true", help="a small corpus and short runs, for development")
    parser.add_argument("--corpus", type=Path, help="corpus directory (default bench/corpus, bench/corpus-quick)")
    parser.add_argument("--output", type=Path, help="the Markdown report to write")
    parser.add_argument("--parts", default="accuracy,server,headline,sweep,batching",
                        help="comma-separated parts to run (default: all)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="MINUTES",
                        help="first wait up to this long for the 1-minute load average to fall below --quiet-load")
    parser.add_argument("--quiet-load", type=float, default=1.5)
    return parser


def _run_parts(results: Results, plan: Plan, args: argparse.Namespace, scratch: Path, deadline: float,
               environment: Mapping[str, str]) -> None:
    parts = set(args.parts.split(","))
    corpus_dir = args.corpus or BENCH_DIR / ("corpus-quick" if args.quick else "corpus")
    _say("corpus...")
    corpus = build_corpus(corpus_dir, plan.spec)
    results.corpus = corpus
    settings = results.settings
    workload = _workload(corpus, plan.workload_prompts, plan.workload_voicemails, plan.workload_long, mixed=True)
    voicemails = requests_for(corpus, ("voicemail", "long"), ["pcm-8k"])
    pipeline = Pipeline(settings)
    try:
        if "accuracy" in parts:
            results.accuracy = _timed(results, "accuracy", lambda: measure_accuracy(
                pipeline, corpus, plan.spec.codecs, plan.long_codecs), None)
        if results.accuracy is not None:
            results.fidelity = _timed(results, "fidelity", lambda: measure_fidelity(
                settings, corpus, plan.fidelity_codecs, ("prompt", "voicemail", "long")), [])
            results.vad_margin = _timed(results, "VAD margin",
                                        lambda: measure_vad_margin(corpus, settings.model().vad_threshold), None)
        if "server" in parts or "headline" in parts:
            queue = _queue(corpus, plan.queue_depth or settings.jobs.max_queued)
            baseline_environment = environment if "headline" in parts else None
            results.server = _timed(results, "server and headline", lambda: measure_server(
                scratch, pipeline, workload, voicemails, queue, plan.restarts, baseline_environment), None)
    finally:
        pipeline.close()
    if "headline" in parts:
        if _within(results, deadline, "faster-whisper defaults on non-speech"):
            results.baseline_nonspeech = _timed(results, "baseline non-speech", lambda: _baseline_nonspeech(
                corpus, plan.nonspeech_baseline, environment), None)
    if "sweep" in parts and _within(results, deadline, "sweep"):
        sweep_set = _workload(corpus, plan.sweep_prompts, plan.sweep_voicemails, plan.sweep_long, mixed=False)
        silent = [Request(r, "pcm-8k", r.path(corpus.root)) for r in corpus.of_kind("nonspeech") if r.duration <= 30]
        nothing: tuple[list[SweepRow], list[str]] = ([], [])
        rows, skipped = _timed(results, "sweep", lambda: measure_sweep(settings, sweep_set, silent, deadline, environment), nothing)
        results.sweep = rows
        results.skipped += [f"sweep: {label} (time budget)" for label in skipped]
    if "batching" in parts and _within(results, deadline, "batching"):
        long_ones = requests_for(corpus, ("long",), ["pcm-8k"]) + requests_for(corpus, ("voicemail",), ["pcm-8k"])[:2]
        results.batching = _timed(results, "batching", lambda: measure_batching(settings, long_ones, (4, 8), 4), None)


def _workload(corpus: Corpus, prompts: int, voicemails: int, long: int, mixed: bool) -> list[Request]:
    """Distinct requests: prompts, voicemails and long voicemails; ``mixed`` spreads them over
    the codecs (a PBX's uploads are not all one format), else all PCM 8 kHz."""
    codecs = list(audio.CODECS) if mixed else ["pcm-8k"]
    chosen = corpus.of_kind("prompt")[:prompts] + corpus.of_kind("voicemail")[:voicemails] + corpus.of_kind("long")[:long]
    return [Request(r, codecs[i % len(codecs)], r.path(corpus.root, codecs[i % len(codecs)])) for i, r in enumerate(chosen)]


def _queue(corpus: Corpus, depth: int) -> list[Request]:
    """``depth`` distinct short requests (prompts in every codec): enough to fill the queue."""
    return requests_for(corpus, ("prompt",), list(audio.CODECS))[:depth]


def _baseline_nonspeech(corpus: Corpus, count: int, environment: Mapping[str, str]) -> tuple[int, int, list[Any]]:
    """faster-whisper's defaults on the shortest non-speech recordings: what the filters save."""
    chosen = sorted(corpus.of_kind("nonspeech"), key=lambda r: (r.tail != "moh", r.duration))[:count]
    requests = [Request(r, "pcm-8k", r.path(corpus.root)) for r in chosen]
    with BaselineProcess(environment) as baseline:
        outcomes = [baseline.recognize(request) for request in requests]
    words, invented = words_on_nonspeech(outcomes)
    return len(requests), words, invented


def _timed(results: Results, part: str, work: Callable[[], T], default: T) -> T:
    """Run one part, timing it; a part that fails is reported (and ``default`` stands in) so the
    parts after it still run and the report is still written."""
    _say(f"{part}...")
    started = time.monotonic()
    try:
        value = work()
    except Exception as exc:  # a benchmark part's bug or a broken file must not lose the whole run
        logging.getLogger("bench").exception("part %s failed", part)
        results.skipped.append(f"{part} (failed: {type(exc).__name__}: {exc})")
        value = default
    results.part_seconds[part] = time.monotonic() - started
    _say(f"{part}: {results.part_seconds[part]:.0f} s")
    return value


def _within(results: Results, deadline: float, part: str) -> bool:
    if time.monotonic() < deadline:
        return True
    results.skipped.append(f"{part} (time budget)")
    return False


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
