"""Test helpers shared by every folder (import as ``from asr_testkit import ...``; a module name
that no conftest shadows): the real Asterisk prompts with their reference texts, and the word
error rate with the normaliser the benchmark documents (``callpipe_asr.scoring``: one normaliser
for both)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from callpipe_asr.scoring import normalize_text, word_error_rate

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
REFERENCES = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

__all__ = [
    "REFERENCES", "SOUNDS_DIR", "Prompt", "load_language_prompts", "load_prompts", "load_references", "normalize_text",
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


TONE_PROMPTS = frozenset({"beep", "beeperr", "confbridge-join", "confbridge-leave"})
"""Prompts that are tones, not speech: most reference files describe them in brackets, the
Italian one in plain words ("un suono beep")."""


def load_language_prompts(language: str, min_words: int = 3) -> dict[str, Prompt]:
    """The Asterisk prompts of another language (``es``, ``fr``, ``it``, ``ru``: Debian's
    asterisk-core-sounds-<language>-wav, references in asterisk-core-sounds-<language>) that
    say at least ``min_words`` words, without digits (spoken differently per language) or sound
    descriptions; sorted by name. Empty where the packages are missing. A ``?`` before the end
    of a reference stands for a letter lost to a wrong encoding (the Italian file has "pu?" for
    "può", "?" for "è"): such prompts are left out, their reference is not what was said."""
    references = Path(f"/usr/share/doc/asterisk-core-sounds-{language}/core-sounds-{language}.txt.gz")
    sounds = Path(f"/usr/share/asterisk/sounds/{language}")
    if not references.exists():
        return {}
    prompts: dict[str, Prompt] = {}
    with gzip.open(references, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            name, sep, text = line.partition(":")
            name, text = name.strip(), text.strip()
            usable = (sep and not line.startswith(";") and name not in TONE_PROMPTS
                      and not any(c in text for c in "[(<0123456789") and "?" not in text.rstrip("?. "))
            if usable and len(text.split()) >= min_words and (sounds / f"{name}.wav").exists():
                prompts[name] = Prompt(name, sounds / f"{name}.wav", text)
    return dict(sorted(prompts.items()))
