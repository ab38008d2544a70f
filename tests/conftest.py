"""Shared fixtures: real Asterisk prompts with their reference texts, settings in a temp dir,
the app with the real bundled model, and a WER helper."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jiwer
import pytest

from callpipe_asr.settings import Settings, load_settings

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
REFERENCES = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")


@dataclass(frozen=True)
class Prompt:
    """A real 8 kHz human recording from asterisk-core-sounds-en-wav and what it says."""

    name: str
    path: Path
    text: str

    @property
    def audio(self) -> bytes:
        return self.path.read_bytes()


def _load_references() -> dict[str, str]:
    references: dict[str, str] = {}
    with gzip.open(REFERENCES, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";") and "[" not in text:
                references[name.strip()] = text.strip()
    return references


@pytest.fixture(scope="session")
def prompts() -> dict[str, Prompt]:
    """Every English Asterisk prompt that has a wav file and a spoken (not [sound]) reference."""
    if not REFERENCES.exists():
        pytest.fail("Debian packages asterisk-core-sounds-en and -en-wav are missing: run ./scripts/test")
    return {
        name: Prompt(name, SOUNDS_DIR / f"{name}.wav", text)
        for name, text in _load_references().items()
        if (SOUNDS_DIR / f"{name}.wav").exists()
    }


@pytest.fixture(scope="session")
def prompt(prompts: dict[str, Prompt]) -> Prompt:
    """One 5.5 s sentence, the workhorse of the fast tests."""
    return prompts["agent-alreadyon"]


_NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
            "8": "eight", "9": "nine", "0": "zero", "#": "pound", "*": "star"}


def normalize_text(text: str) -> str:
    """Lower case, digits and keypad symbols as spoken, no punctuation."""
    text = text.lower().replace("'", "")
    text = re.sub(r"[0-9#*]", lambda m: f" {_NUMBERS[m.group(0)]} ", text)
    text = re.sub(r"[^a-z ]+", " ", text)
    return " ".join(text.split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize_text(reference), normalize_text(hypothesis) or "<empty>"))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with the data directory in tmp_path; keyword arguments are dotted overrides
    written with ``__`` (``jobs__max_queued=2``)."""

    def build(**overrides: Any) -> Settings:
        dotted = {key.replace("__", "."): value for key, value in overrides.items()}
        dotted.setdefault("data_dir", tmp_path / "data")
        return load_settings(None, environ={}, overrides=dotted)

    return build
