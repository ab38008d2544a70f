"""A benchmark child process that speaks JSON lines: the parent writes one request per line, the
child answers each with one line. Used where a measurement must run with an environment of its
own (faster-whisper as a user's script would run it; our pipeline with other OpenMP settings),
since our engine sets process-wide settings that the parent then carries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Mapping, Sequence

BENCH_ROOT = Path(__file__).resolve().parent.parent


def answer(message: dict[str, Any], stream: IO[str] = sys.stdout) -> None:
    """One line to the parent (the child's side)."""
    stream.write(json.dumps(message) + "\n")
    stream.flush()


class JsonLinesChild:
    """``python -m <module> <args>`` with ``environment``; its first line is read at start (the
    child says it is ready once its model is loaded)."""

    def __init__(self, module: str, args: Sequence[str], environment: Mapping[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", module, *args], env=dict(environment), cwd=BENCH_ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        try:
            self.ready = self.read()
        except (RuntimeError, ValueError):
            self.close()
            raise

    def ask(self, message: dict[str, Any] | str) -> dict[str, Any]:
        assert self._process.stdin is not None
        line = message if isinstance(message, str) else json.dumps(message)
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark's child process ended (exit status {self._process.wait()})")
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> JsonLinesChild:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()
