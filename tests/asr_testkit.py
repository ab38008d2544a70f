"""Test helpers shared by every folder (import as ``from asr_testkit import ...``; a module name
that no conftest shadows): the real Asterisk prompts with their reference texts, and the word
error rate with the normaliser the benchmark documents."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import jiwer

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


def load_references() -> dict[str, str]:
    references: dict[str, str] = {}
    with gzip.open(REFERENCES, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";") and "[" not in text:
                references[name.strip()] = text.strip()
    return references


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




def load_prompts() -> dict[str, Prompt]:
    """Every English Asterisk prompt that has a wav file and a spoken (not [sound]) reference."""
    return {
        name: Prompt(name, SOUNDS_DIR / f"{name}.wav", text)
        for name, text in load_references().items()
        if (SOUNDS_DIR / f"{name}.wav").exists()
    }
