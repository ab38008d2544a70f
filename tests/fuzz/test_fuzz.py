"""Fuzzing with atheris (libFuzzer for Python), bounded: every target of ``fuzz_targets.py`` runs
for ``CALLPIPE_FUZZ_SECONDS`` (default 8 s: under 2 minutes for all ten) from the committed seed
corpus, in its own process so a native crash or a hang is caught, not suffered. New inputs go to
a temporary working corpus; the committed one only grows by hand (a finding's input, once fixed,
is added to it and to ``test_fuzz_regressions.py``). The corpus is also replayed in-process on
every run, which is quick and needs no atheris.

Longer runs: ``CALLPIPE_FUZZ_SECONDS=600 pytest tests/fuzz -k bounded``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from callpipe_asr.errors import CallpipeError
from fuzz_targets import TARGETS

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
SECONDS_PER_TARGET = int(os.environ.get("CALLPIPE_FUZZ_SECONDS", "8"))
PER_INPUT_TIMEOUT_SECONDS = 10
"""An input that takes this long is a hang (libFuzzer's ``-timeout``)."""
RSS_LIMIT_MB = 2048
MAX_SEED_BYTES = 16 * 1024


def seeds(target: str) -> list[Path]:
    return sorted((CORPUS / target).iterdir())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_committed_corpus_replays_cleanly(target: str) -> None:
    """Every seed (known shapes and past findings) ends in a result or a CallpipeError."""
    files = seeds(target)
    assert files, f"no seeds for {target}"
    for path in files:
        assert path.stat().st_size <= MAX_SEED_BYTES, f"{path} is too big for a committed seed"
        try:
            TARGETS[target](path.read_bytes())
        except CallpipeError:
            pass


@pytest.mark.e2e
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_for_a_bounded_time(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is in the test extra: pip install -e '.[test]'")
    work, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    work.mkdir()
    artifacts.mkdir()
    command = [
        sys.executable, str(HERE / "fuzz_targets.py"), target, str(work), str(CORPUS / target),
        f"-max_total_time={SECONDS_PER_TARGET}", f"-timeout={PER_INPUT_TIMEOUT_SECONDS}",
        f"-rss_limit_mb={RSS_LIMIT_MB}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, errors="replace", timeout=SECONDS_PER_TARGET + 120, cwd=tmp_path
    )
    findings = {path.name: base64.b64encode(path.read_bytes()[:4096]).decode() for path in artifacts.iterdir()}
    assert result.returncode == 0 and not findings, (
        f"fuzzing {target} found a crash, hang or non-CallpipeError exception; "
        f"inputs (base64): {findings}\n{result.stderr[-6000:]}"
    )
    assert "Done" in result.stderr or "DONE" in result.stderr, result.stderr[-2000:]
