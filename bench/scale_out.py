"""Scale-out throughput: the same batch of real recordings through one API process
(``serve --role api``) and 1, 2, 3... worker processes (``callpipe-asr worker``) sharing a
throwaway PostgreSQL server on this machine.

Each worker runs one recognition at a time on one thread (``jobs.workers: 1``,
``cpu_threads: 1``), as one small worker machine would; the figure is how the batch's wall time
shrinks as workers are added. On a machine with fewer cores than workers, the cores are the
bound, not the queue: the table says how many cores there were and how loaded they were.

Usage: ``.venv/bin/python bench/scale_out.py [--workers 1,2,3] [--jobs 24]``. It needs the
Debian ``postgresql`` server package (``./scripts/setup --test`` installs it) and the Asterisk
prompts; it prints a Markdown section and writes it into ``bench/RESULTS.md`` between its own
markers (the rest of that file is left alone).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway server and the prompts are the tests' helpers

from asr_testkit import Prompt, load_prompts  # noqa: E402
from pg_server import PostgresServer, find_bindir, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN = "<!-- scale-out: begin (bench/scale_out.py writes this section) -->"
END = "<!-- scale-out: end -->"
MIN_SECONDS, MAX_SECONDS = 2.0, 8.0
"""Prompt lengths used: voicemail-like sentences, not single words."""
START_TIMEOUT_SECONDS = 120.0
RUN_TIMEOUT_SECONDS = 900.0


@dataclass(frozen=True)
class Measurement:
    workers: int
    jobs: int
    audio_seconds: float
    wall_seconds: float
    load_before: float
    load_after: float
    passes: int = 1

    @property
    def jobs_per_minute(self) -> float:
        return 60.0 * self.jobs / self.wall_seconds

    @property
    def audio_per_second(self) -> float:
        """Seconds of audio transcribed per second of wall time (the inverse real-time factor)."""
        return self.audio_seconds / self.wall_seconds


def pick_prompts(count: int) -> list[Prompt]:
    """The first ``count`` prompts (by name) of voicemail-sentence length: the same every run."""
    chosen = [p for _, p in sorted(load_prompts().items()) if MIN_SECONDS <= _seconds(p) <= MAX_SECONDS]
    if len(chosen) < count:
        raise SystemExit(f"only {len(chosen)} prompts between {MIN_SECONDS} and {MAX_SECONDS} s")
    return chosen[:count]


def _seconds(prompt: Prompt) -> float:
    """8 kHz 16-bit mono WAV: the data size says the length."""
    return float(prompt.path.stat().st_size - 44) / 16_000


def write_config(directory: Path, dsn: str) -> Path:
    config = directory / "callpipe-asr.yaml"
    config.write_text(
        f"jobs:\n  store: {dsn}\n  workers: 1\n  max_queued: 1000\n  duplicate_window_seconds: 0\n"
        "  poll_interval_seconds: 0.5\n  heartbeat_seconds: 2\nmodels:\n  tiny.en:\n    cpu_threads: 1\n"
    )
    return config


def start(command: Sequence[str], config: Path, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "callpipe_asr", *command, "--config", str(config), "--data-dir", str(data_dir),
             "--log-level", "warning"],
            stdout=output, stderr=subprocess.STDOUT, cwd=ROOT,
        )


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def scalar(dsn: str, sql: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute(sql).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def post(url: str, prompt: Prompt) -> None:
    """One multipart upload to the native API; 202 expected."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{prompt.name}.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + prompt.audio + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "/api/v1/jobs", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        if answer.status != 202:
            raise SystemExit(f"unexpected answer {answer.status} for {prompt.name}")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def measure(server: PostgresServer, workers: int, prompts: list[Prompt], scratch: Path) -> Measurement:
    """One API process and ``workers`` worker processes on a fresh database; the wall time from
    the first job created to the last one finished, as the database recorded them."""
    dsn = server.fresh_database()
    run_dir = scratch / f"workers-{workers}"
    run_dir.mkdir(parents=True)
    config = write_config(run_dir, dsn)
    port = free_port()
    processes = [start(["serve", "--role", "api", "--port", str(port)], config, run_dir / "api", run_dir / "api.log")]
    processes += [start(["worker"], config, run_dir / f"w{n}", run_dir / f"worker-{n}.log") for n in range(workers)]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(url), "the API process", START_TIMEOUT_SECONDS)
        wait_for(lambda: scalar(dsn, "SELECT COUNT(*) FROM workers") == workers, "the workers", START_TIMEOUT_SECONDS)
        load_before = os.getloadavg()[0]
        for prompt in prompts:
            post(url, prompt)
        wait_for(lambda: scalar(dsn, "SELECT COUNT(*) FROM jobs WHERE status IN ('done', 'failed')") == len(prompts),
                 "the batch", RUN_TIMEOUT_SECONDS)
        failed = scalar(dsn, "SELECT COUNT(*) FROM jobs WHERE status = 'failed'")
        if failed:
            raise SystemExit(f"{failed:.0f} jobs failed; see {run_dir}")
        wall = scalar(dsn, "SELECT MAX(finished_at) - MIN(created_at) FROM jobs")
        audio = scalar(dsn, "SELECT SUM(audio_duration) FROM jobs")
        return Measurement(workers, len(prompts), audio, wall, load_before, os.getloadavg()[0])
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def best_of(passes: list[Measurement]) -> Measurement:
    """The fastest pass: on a shared machine the slower ones measure the neighbours, not us."""
    best = min(passes, key=lambda m: m.wall_seconds)
    return Measurement(best.workers, best.jobs, best.audio_seconds, best.wall_seconds, best.load_before,
                       best.load_after, len(passes))


def conclusion(results: list[Measurement], cores: int) -> str:
    """What the figures say, from the figures."""
    base = results[0]
    peak = max(results, key=lambda m: m.jobs_per_minute)
    last = results[-1]
    plural = "s" if peak.workers > 1 else ""
    text = (f"Here throughput peaked at {peak.workers} worker{plural} ({peak.jobs_per_minute / base.jobs_per_minute:.2f}x "
            f"one worker); {last.workers} workers gave {last.jobs_per_minute / base.jobs_per_minute:.2f}x.")
    busiest = min(m.load_before for m in results)
    if busiest >= cores:
        text += (f" Every pass started with a load average of {busiest:.1f} or more on {cores} cores: the cores were "
                 "already busy with other work, so an added worker found no idle core and only took turns.")
    elif last.workers > cores and last.jobs_per_minute <= peak.jobs_per_minute:
        text += (f" Past {cores} workers there is no core left to add: extra processes only take turns on the same "
                 "cores and pay for it in switching and cache misses.")
    return text


def render(results: list[Measurement], command: str) -> str:
    base = results[0]
    rows = "\n".join(
        f"| {m.workers} | {m.jobs} | {m.wall_seconds:.1f} | {m.jobs_per_minute:.1f} | {m.audio_per_second:.2f} | "
        f"{m.jobs_per_minute / base.jobs_per_minute:.2f}x | {m.load_before:.1f} / {m.load_after:.1f} |"
        for m in results
    )
    cores = os.cpu_count() or 0
    return f"""{BEGIN}
## Scale-out: worker processes on PostgreSQL

`{command}`, {time.strftime("%Y-%m-%d %H:%M %Z")}: one API process (`serve --role api`) and N worker
processes (`callpipe-asr worker`, one job at a time each, `cpu_threads: 1`) sharing a throwaway
PostgreSQL 15 on this machine ({cores} cores); {base.jobs} distinct Asterisk prompts
({base.audio_seconds:.0f} s of audio) submitted at once; wall time from the first job created to the
last one finished, as the database recorded it; the best of {base.passes} pass(es) per row.

| workers | jobs | wall s | jobs/min | audio s per s | vs 1 worker | load avg before / after |
|---:|---:|---:|---:|---:|---:|---:|
{rows}

{conclusion(results, cores)} Throughput is bounded by the {cores} cores, not by the queue: with
one thread per worker, a second worker can use the second core; a third can only share the same
two (with the API process, PostgreSQL and each worker's decoding and VAD). On more machines, or
more cores, each worker adds its own core's worth. This machine is shared with other engineers'
test suites (the load averages show how busy it was): the figures are a shape, not a benchmark of
the hardware.
{END}
"""


def write_section(section: str, path: Path = RESULTS) -> None:
    """Put the section into ``path`` between the markers, or append it; nothing else changes."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,3", help="worker counts to measure, comma-separated")
    parser.add_argument("--jobs", type=int, default=24, help="recordings in the batch")
    parser.add_argument("--repeat", type=int, default=2, help="passes per worker count; the fastest is kept")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("the PostgreSQL server (Debian package postgresql) is missing: run ./scripts/setup --test")
    prompts = pick_prompts(args.jobs)
    server = PostgresServer(bindir)
    results: list[Measurement] = []
    try:
        server.start()
        with tempfile.TemporaryDirectory(prefix="callpipe-scale-out-") as scratch:
            counts = [int(n) for n in args.workers.split(",")]
            passes: dict[int, list[Measurement]] = {count: [] for count in counts}
            for round_ in range(args.repeat):  # interleaved, so a busy spell hits every count alike
                for count in counts:
                    passes[count].append(measure(server, count, prompts, Path(scratch) / f"pass-{round_}"))
                    print(f"pass {round_ + 1}, {count} worker(s): {passes[count][-1].wall_seconds:.1f} s "
                          f"(load {passes[count][-1].load_before:.1f} -> {passes[count][-1].load_after:.1f})", flush=True)
            results = [best_of(passes[count]) for count in counts]
    finally:
        server.stop()
    section = render(results, " ".join(["bench/scale_out.py", *(argv if argv is not None else sys.argv[1:])]))
    print(section)
    if not args.no_write:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
