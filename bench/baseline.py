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
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from callpipe_asr.transcript import Transcript

from .child import JsonLinesChild, answer
from .direct import FasterWhisperDirect, Outcome, Request


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--compute-type", help="the only change to WhisperModel's defaults, if given")
    args = parser.parse_args(argv)
    from callpipe_asr.settings import ModelSettings

    load = {"compute_type": args.compute_type} if args.compute_type else {}
    direct = FasterWhisperDirect(ModelSettings(), Path("data"), **load)
    answer({"ready": True, "load_seconds": direct.load_seconds})
    for line in sys.stdin:
        began = time.perf_counter()
        transcript = direct.recognize_path(Path(line.strip()))
        answer({"latency": time.perf_counter() - began, "transcript": transcript.to_dict()})
    return 0


class BaselineProcess(JsonLinesChild):
    """One baseline child process: ``with BaselineProcess(env) as baseline: baseline.recognize(r)``."""

    def __init__(self, environment: Mapping[str, str], compute_type: str | None = None) -> None:
        super().__init__("bench.baseline", ["--compute-type", compute_type] if compute_type else [], environment)
        self.load_seconds = float(self.ready["load_seconds"])

    def recognize(self, request: Request) -> Outcome:
        """The file through faster-whisper; the latency is the child's own, without the pipe."""
        reply = self.ask(str(request.path))
        return Outcome(request, Transcript.from_dict(reply["transcript"]), float(reply["latency"]))


if __name__ == "__main__":
    sys.exit(main())
