"""Test helpers shared by every folder (import as ``from asr_testkit import ...``; a module name
that no conftest shadows): the real Asterisk prompts with their reference texts, and the word
error rate with the normaliser the benchmark documents (``callpipe_asr.scoring``: one normaliser
for both)."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sources import language_prompts
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.scoring import normalize_text, word_error_rate
from callpipe_asr.transcript import Transcript

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
REFERENCES = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

__all__ = [
    "REFERENCES", "SOUNDS_DIR", "HoldsResultUntilAllowed", "Prompt", "load_language_prompts", "load_prompts", "load_references", "normalize_text",
    "word_error_rate",
]


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


def load_prompts() -> dict[str, Prompt]:
    """Every English Asterisk prompt that has a wav file and a spoken (not [sound]) reference."""
    return {
        name: Prompt(name, SOUNDS_DIR / f"{name}.wav", text)
        for name, text in load_references().items()
        if (SOUNDS_DIR / f"{name}.wav").exists()
    }


def load_language_prompts(language: str, min_words: int = 3) -> dict[str, Prompt]:
    """The benchmark's prompts of another language (:func:`bench.sources.language_prompts`: the
    same filters for tone prompts and references damaged by a wrong encoding), by name."""
    return {p.name: Prompt(p.name, p.path, p.text) for p in language_prompts(language, min_words)}


class HoldsResultUntilAllowed:
    """The real recognizer, except that once a job's text is ready it says so and waits for the
    test's go-ahead before handing the text to the worker pool: a test can make the job store
    fail (a lock, a stopped database) exactly between a recognition and the storing of its
    result."""

    def __init__(self, recognizer: Recognizer) -> None:
        self._recognizer = recognizer
        self.recognised = threading.Event()
        self.go_ahead = threading.Event()

    def recognize(self, *args: Any, **kwargs: Any) -> Transcript:
        transcript = self._recognizer.recognize(*args, **kwargs)
        self.recognised.set()
        assert self.go_ahead.wait(120), "the test never let the result through"
        return transcript
