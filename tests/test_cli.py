"""`callpipe-asr transcribe` prints transcripts without a server, through the same pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asr_testkit import Prompt, word_error_rate

pytestmark = pytest.mark.e2e


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callpipe_asr", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_transcribe_prints_each_file(prompts: dict[str, Prompt], tmp_path: Path) -> None:
    first, second = prompts["agent-alreadyon"], prompts["all-circuits-busy-now"]
    result = run_cli("transcribe", str(first.path), str(second.path), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{first.path}: ")
    assert word_error_rate(first.text, lines[0].split(": ", 1)[1]) < 0.2
    assert word_error_rate(second.text, lines[1].split(": ", 1)[1]) < 0.3


def test_transcribe_json_and_subtitles(prompt: Prompt, tmp_path: Path) -> None:
    result = run_cli("transcribe", "--format", "json", str(prompt.path), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["file"] == str(prompt.path)
    assert document["segments"][0]["words"]
    srt = run_cli("transcribe", "--format", "srt", str(prompt.path), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert srt.stdout.startswith("1\n00:00:00,")


def test_bad_and_missing_files_are_reported_and_the_rest_still_runs(prompt: Prompt, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio " * 50)
    result = run_cli("transcribe", str(junk), str(tmp_path / "missing.wav"), str(prompt.path), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "junk.wav: not a recognised audio format" in result.stderr
    assert "missing.wav: cannot read" in result.stderr
    assert word_error_rate(prompt.text, result.stdout.split(": ", 1)[1]) < 0.2


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("jobs:\n  wrkers: 1\n")
    result = run_cli("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "jobs.wrkers" in result.stderr
