"""faster-whisper as its README calls it, in a process of its own: the headline's baseline.

A separate process so that nothing of ours reaches it: callpipe-asr's engine sets OpenMP's wait
policy and glibc's mmap threshold for the whole process, and the baseline must run with the
environment a user's own script would have. The child (``python -m bench.baseline
[--compute-type int8]``) loads the model, says it is ready, then reads one file path per line
and answers each with one JSON line (transcript, latency): the parent sends files one at a time,
interleaved with its other measurements, so a change in the machine's load hits every side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Mapping, Sequence

from callpipe_asr.transcript import Transcript

from .direct import FasterWhisperDirect, Outcome, Request


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--compute-type", help="the only change to WhisperModel's defaults, if given")
    args = parser.parse_args(argv)
    from callpipe_asr.settings import ModelSettings

    load = {"compute_type": args.compute_type} if args.compute_type else {}
    direct = FasterWhisperDirect(ModelSettings(), Path("data"), **load)
    _answer(sys.stdout, {"ready": True, "load_seconds": direct.load_seconds})
    for line in sys.stdin:
        began = time.perf_counter()
        transcript = direct.recognize_path(Path(line.strip()))
        _answer(sys.stdout, {"latency": time.perf_counter() - began, "transcript": transcript.to_dict()})
    return 0


def _answer(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


class BaselineProcess:
    """One baseline child process: ``with BaselineProcess(env) as baseline: baseline.recognize(r)``."""

    def __init__(self, environment: Mapping[str, str], compute_type: str | None = None) -> None:
        command = [sys.executable, "-m", "bench.baseline"] + (["--compute-type", compute_type] if compute_type else [])
        self._process = subprocess.Popen(
            command, env=dict(environment), cwd=Path(__file__).resolve().parent.parent, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self.load_seconds = float(self._read()["load_seconds"])

    def recognize(self, request: Request) -> Outcome:
        """The file through faster-whisper; the latency is the child's own, without the pipe."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"{request.path}\n")
        self._process.stdin.flush()
        answer = self._read()
        return Outcome(request, Transcript.from_dict(answer["transcript"]), float(answer["latency"]))

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the baseline process ended (exit status {self._process.wait()})")
        message: dict[str, Any] = json.loads(line)
        return message

    def __enter__(self) -> BaselineProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


if __name__ == "__main__":
    sys.exit(main())
