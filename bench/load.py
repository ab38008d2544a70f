"""Load: many concurrent uploads of real recordings, more than the queue holds, on loopback.

One ``callpipe-asr serve`` process with a small queue (``jobs.max_queued``) gets ``--uploads``
synchronous native-API requests (``wait``), ``--concurrency`` at a time, of real Asterisk prompts.
Each client behaves as a PBX should: after a 429 it waits what Retry-After says (at most
``LoadPlan.max_backoff_seconds``) before its next upload, so the server stays over-subscribed for the
whole run instead of refusing one burst in a second.
Every answer must be a transcript (200 with the finished job) or a refusal (429 with
Retry-After); anything else, a 5xx above all, is a violation and the run exits 1. Recorded: the
answers by status, p50/p95 latency of transcripts and of refusals, throughput, and the server's
memory (VmRSS sampled, and VmHWM: the peak resident size the kernel saw).

Usage: ``.venv/bin/python bench/load.py [--uploads 150] [--concurrency 24] [--max-queued 8]``.
It prints a Markdown section and writes it into ``bench/RESULTS.md`` between its own markers (the
rest of the file is left alone). ``tests/e2e/test_load.py`` runs a small version as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the prompts are the tests' helpers

from asr_testkit import Prompt, load_prompts  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN = "<!-- load: begin (bench/load.py writes this section) -->"
END = "<!-- load: end -->"
READY_TIMEOUT_SECONDS = 120.0
WAIT_SECONDS = 600
"""The ``wait`` each upload asks for: long enough that an accepted job answers with its transcript."""
MIN_SECONDS, MAX_SECONDS = 2.0, 8.0
"""Prompt lengths used: voicemail-sentence sized."""
RSS_SAMPLE_SECONDS = 0.25


@dataclass(frozen=True)
class LoadPlan:
    uploads: int
    concurrency: int
    max_queued: int
    workers: int
    max_backoff_seconds: float = 10.0
    """The longest a client waits after a 429 before its next upload (Retry-After, capped)."""


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float
    job_id: str | None = None
    job_status: str | None = None
    """For a 200: the job's final state (``done`` or ``failed``)."""
    audio_seconds: float = 0.0
    retry_after: str | None = None
    ended: float = 0.0
    """``time.monotonic()`` when the answer arrived."""


@dataclass
class Memory:
    """The server's resident size in KiB: sampled while loaded, and the kernel's peak."""

    samples: list[int] = field(default_factory=list)
    peak_kib: int = 0

    @property
    def sampled_max_kib(self) -> int:
        return max(self.samples, default=0)


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(directory: Path, plan: LoadPlan) -> Path:
    """Defaults, except a small queue (the point of the test) and no duplicate answering (the
    same prompt is sent many times and must be recognised each time)."""
    config = directory / "callpipe-asr.yaml"
    config.write_text(
        f"jobs:\n  workers: {plan.workers}\n  max_queued: {plan.max_queued}\n  duplicate_window_seconds: 0\n"
        f"server:\n  max_concurrent_uploads: {max(16, plan.concurrency)}\n"
    )
    return config


def start_server(directory: Path, plan: LoadPlan) -> tuple[subprocess.Popen[bytes], str]:
    """A ready server on a free loopback port; the caller stops it."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALLPIPE_ASR_")}
    with open(directory / "server.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "callpipe_asr", "serve", "--config", str(write_config(directory, plan)),
             "--data-dir", str(directory / "data"), "--port", str(port), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not become ready; see {directory / 'server.log'}")
        time.sleep(0.2)
    return process, url


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of a process, in KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample_memory(pid: int, memory: Memory, stop: threading.Event) -> None:
    while not stop.wait(RSS_SAMPLE_SECONDS):
        memory.samples.append(rss_kib(pid))


# -- the clients ------------------------------------------------------------------------------


def pick_recordings(count: int) -> list[Prompt]:
    """Voicemail-sentence prompts by name, the same every run."""
    chosen = [p for _, p in sorted(load_prompts().items()) if MIN_SECONDS <= prompt_seconds(p) <= MAX_SECONDS]
    return chosen[:count]


def prompt_seconds(prompt: Prompt) -> float:
    """8 kHz 16-bit mono WAV: the data size says the length."""
    return float(prompt.path.stat().st_size - 44) / 16_000


async def upload(session: aiohttp.ClientSession, url: str, prompt: Prompt, index: int) -> Answer:
    form = aiohttp.FormData()
    form.add_field("wait", str(WAIT_SECONDS))
    form.add_field("file", prompt.audio, filename=f"{index}-{prompt.name}.wav", content_type="audio/wav")
    started = time.monotonic()
    async with session.post(url + "/api/v1/jobs", data=form) as response:
        body = await response.json(content_type=None) if response.content_type == "application/json" else {}
        seconds = time.monotonic() - started
        return Answer(
            status=response.status,
            seconds=seconds,
            job_id=body.get("id"),
            job_status=body.get("status"),
            audio_seconds=prompt_seconds(prompt),
            retry_after=response.headers.get("Retry-After"),
            ended=time.monotonic(),
        )


async def run_load(url: str, recordings: Sequence[Prompt], plan: LoadPlan) -> tuple[list[Answer], float]:
    """``plan.uploads`` uploads, ``plan.concurrency`` in flight; the answers, and the wall time
    from the first upload to the last answer (the clients' last back-off is not load)."""
    gate = asyncio.Semaphore(plan.concurrency)
    timeout = aiohttp.ClientTimeout(total=WAIT_SECONDS + 120)
    connector = aiohttp.TCPConnector(limit=plan.concurrency)

    async def one(index: int) -> Answer:
        async with gate:  # a client: its slot stays taken while it backs off
            answer = await upload(session, url, recordings[index % len(recordings)], index)
            if answer.status == 429 and answer.retry_after and answer.retry_after.isdigit():
                await asyncio.sleep(min(plan.max_backoff_seconds, float(answer.retry_after)))
            return answer

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        answers = await asyncio.gather(*(one(index) for index in range(plan.uploads)))
    return list(answers), max(answer.ended for answer in answers) - started


def violations(answers: Sequence[Answer]) -> list[str]:
    """What breaks the promise: only transcripts (200, job done or failed) and 429s with
    Retry-After."""
    problems = []
    for answer in answers:
        if answer.status == 429 and answer.retry_after is None:
            problems.append("a 429 without Retry-After")
        elif answer.status == 200 and answer.job_status not in ("done", "failed"):
            problems.append(f"a 200 for a job still {answer.job_status}")
        elif answer.status not in (200, 429):
            problems.append(f"status {answer.status}")
    return problems


# -- the report -------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def render(plan: LoadPlan, answers: Sequence[Answer], wall: float, memory: Memory, idle_kib: int) -> str:
    transcripts = [a for a in answers if a.status == 200]
    refusals = [a for a in answers if a.status == 429]
    others = len(answers) - len(transcripts) - len(refusals)
    done = sum(a.job_status == "done" for a in transcripts)
    audio = sum(a.audio_seconds for a in transcripts)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lat = [a.seconds for a in transcripts]
    ref = [a.seconds for a in refusals]
    return f"""{BEGIN}
## Load: concurrent uploads past the queue limit

`bench/load.py --uploads {plan.uploads} --concurrency {plan.concurrency} --max-queued {plan.max_queued} --workers {plan.workers}`,
{when}, on this machine ({os.cpu_count()} cores, load average {load} at the end): one server
process on loopback, `jobs.max_queued: {plan.max_queued}`, `jobs.workers: {plan.workers}`; each
client uploads a real Asterisk prompt ({MIN_SECONDS:.0f}-{MAX_SECONDS:.0f} s) to `/api/v1/jobs` with
`wait={WAIT_SECONDS}`; after a 429 it waits Retry-After (at most {plan.max_backoff_seconds:.0f} s) before its next upload.

| answers | transcripts (done / failed) | 429 with Retry-After | other (5xx...) | wall s |
|---:|---:|---:|---:|---:|
| {len(answers)} | {len(transcripts)} ({done} / {len(transcripts) - done}) | {len(refusals)} | {others} | {wall:.1f} |

| latency | p50 s | p95 s | max s |
|---|---:|---:|---:|
| transcript (upload to text) | {percentile(lat, 0.5):.2f} | {percentile(lat, 0.95):.2f} | {max(lat, default=0):.2f} |
| refusal (429) | {percentile(ref, 0.5):.3f} | {percentile(ref, 0.95):.3f} | {max(ref, default=0):.3f} |

Throughput: {60 * len(transcripts) / wall:.1f} transcripts per minute, {audio / wall:.2f} s of audio
per second. Server memory: {idle_kib / 1024:.0f} MiB resident when idle with the model loaded,
{memory.sampled_max_kib / 1024:.0f} MiB at most while loaded (sampled every {RSS_SAMPLE_SECONDS} s),
peak {memory.peak_kib / 1024:.0f} MiB (VmHWM). The queue bounds the work and the memory: past
{plan.max_queued} jobs waiting or running, an upload is refused at once (the 429 latency) instead
of piling up. The machine is shared with other engineers' tests: the timings are a shape, not a
benchmark of the hardware.
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


def measure(plan: LoadPlan, scratch: Path) -> tuple[list[Answer], float, Memory, int]:
    """Start a server, load it, stop it: the answers, wall time, memory and idle RSS (KiB)."""
    process, url = start_server(scratch, plan)
    memory = Memory()
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(process.pid, memory, stop), daemon=True)
    try:
        idle = rss_kib(process.pid)
        sampler.start()
        answers, wall = asyncio.run(run_load(url, pick_recordings(40), plan))
        memory.peak_kib = rss_kib(process.pid, "VmHWM")
    finally:
        stop.set()
        stop_server(process)
    return answers, wall, memory, idle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--max-queued", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help=f"print the section without writing {RESULTS.name}")
    args = parser.parse_args(argv)
    plan = LoadPlan(args.uploads, args.concurrency, args.max_queued, args.workers)
    with tempfile.TemporaryDirectory(prefix="callpipe-load-") as scratch:
        answers, wall, memory, idle = measure(plan, Path(scratch))
    section = render(plan, answers, wall, memory, idle)
    print(section)
    problems = violations(answers)
    if problems:
        print(f"load: {len(problems)} answers broke the promise: {sorted(set(problems))}", file=sys.stderr)
        return 1
    if not args.no_write:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
