"""Our pipeline in a process of its own, with an environment the parent chooses: the sweep's
rows that change process-wide settings (OpenMP's wait policy is read once, when CTranslate2
loads, so it cannot change inside the benchmark's own process).

The child (``python -m bench.isolated --data-dir DIR``) loads the shipped defaults, says it is
ready, then answers each line ``{"paths", "concurrency", "options"}`` with one run: its wall and
CPU time and each file's transcript and latency. The parent scores them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

from callpipe_asr.settings import load_settings
from callpipe_asr.transcript import RecognitionOptions, Transcript

from .child import JsonLinesChild, answer
from .corpus import Recording
from .direct import Outcome, Pipeline, Request, Run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.isolated", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    pipeline = Pipeline(load_settings(None, environ={}, overrides={"data_dir": args.data_dir}))
    answer({"ready": True, "load_seconds": pipeline.load_seconds})
    for line in sys.stdin:
        message = json.loads(line)
        requests = [_bare_request(Path(path)) for path in message["paths"]]
        run = pipeline.run("isolated", requests, int(message["concurrency"]), RecognitionOptions.from_dict(message["options"]))
        answer({
            "wall": run.wall,
            "cpu": run.cpu_seconds,
            "outcomes": [{"latency": o.latency, "error": o.error, "transcript": o.transcript.to_dict()} for o in run.outcomes],
        })
    pipeline.close()
    return 0


def _bare_request(path: Path) -> Request:
    """The child needs only the file; the parent keeps the recordings and their references."""
    return Request(Recording(id=path.stem, kind="", duration=0.0, text="", sentences=(), speech_end=0.0, tail=""), "", path)


class PipelineProcess(JsonLinesChild):
    """The shipped pipeline in a child with ``environment``; ``run`` mirrors :meth:`Pipeline.run`."""

    def __init__(self, environment: Mapping[str, str], data_dir: Path) -> None:
        super().__init__("bench.isolated", ["--data-dir", str(data_dir)], environment)

    def run(self, label: str, requests: Sequence[Request], concurrency: int, options: RecognitionOptions) -> Run:
        reply = self.ask({"paths": [str(r.path) for r in requests], "concurrency": concurrency, "options": options.to_dict()})
        outcomes = tuple(
            Outcome(request, Transcript.from_dict(item["transcript"]), float(item["latency"]), item["error"])
            for request, item in zip(requests, reply["outcomes"], strict=True)
        )
        return Run(label, concurrency, float(reply["wall"]), outcomes, float(reply["cpu"]))


if __name__ == "__main__":
    sys.exit(main())
