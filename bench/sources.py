"""What the Debian packages provide: the Asterisk prompts with their reference texts, the
prompts that are sounds rather than speech, and the music-on-hold tracks."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
REFERENCES = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
MOH_DIR = Path("/usr/share/asterisk/moh")


@dataclass(frozen=True)
class Prompt:
    """One real 8 kHz human recording and what it says (stage directions removed)."""

    name: str
    path: Path
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


def spoken(reference: str) -> str:
    """The words of a reference, without its stage directions ("(simple tone sound plays)")."""
    return " ".join(re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", reference).split())


def read_references() -> dict[str, str]:
    """Prompt name -> reference text, exactly as the package's text file gives them."""
    references: dict[str, str] = {}
    with gzip.open(REFERENCES, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";"):
                references[name.strip()] = text.strip()
    return references


def speech_prompts(min_words: int = 3) -> list[Prompt]:
    """Prompts with a WAV file and at least ``min_words`` spoken words, sorted by name."""
    prompts = []
    for name, text in sorted(read_references().items()):
        path = SOUNDS_DIR / f"{name}.wav"
        words = spoken(text)
        if path.exists() and "[" not in text and len(words.split()) >= min_words:
            prompts.append(Prompt(name, path, words))
    return prompts


TONE_PROMPTS = frozenset({"beep", "beeperr", "confbridge-join", "confbridge-leave"})
"""Prompts that are tones, not speech: most reference files describe them in brackets, the
Italian one in plain words ("un suono beep")."""


def language_prompts(language: str, min_words: int = 3) -> list[Prompt]:
    """The Asterisk prompts of another language (``es``, ``fr``, ``it``, ``ru``: Debian's
    asterisk-core-sounds-<language>-wav, references in asterisk-core-sounds-<language>) that say
    at least ``min_words`` words, without digits (spoken differently per language) or sound
    descriptions; sorted by name. Empty where the packages are missing. A ``?`` before the end
    of a reference stands for a letter lost to a wrong encoding (the Italian file has "pu?" for
    "può", "?" for "è"): such prompts are left out, their reference is not what was said."""
    references = Path(f"/usr/share/doc/asterisk-core-sounds-{language}/core-sounds-{language}.txt.gz")
    sounds = Path(f"/usr/share/asterisk/sounds/{language}")
    if not references.exists():
        return []
    prompts: dict[str, Prompt] = {}
    with gzip.open(references, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            name, sep, text = line.partition(":")
            name, text = name.strip(), text.strip()
            usable = (sep and not line.startswith(";") and name not in TONE_PROMPTS
                      and not any(c in text for c in "[(<0123456789") and "?" not in text.rstrip("?. "))
            if usable and len(text.split()) >= min_words and (sounds / f"{name}.wav").exists():
                prompts[name] = Prompt(name, sounds / f"{name}.wav", text)
    return [prompts[name] for name in sorted(prompts)]


def sound_effect_prompts() -> list[Path]:
    """Prompts whose whole reference is a bracketed sound ("[this is a simple beep tone]"): real
    telephone tones recorded by Asterisk, no speech."""
    return [
        SOUNDS_DIR / f"{name}.wav"
        for name, text in sorted(read_references().items())
        if text.startswith("[") and not spoken(text) and (SOUNDS_DIR / f"{name}.wav").exists()
    ]


def moh_tracks() -> list[Path]:
    return sorted(MOH_DIR.glob("*.wav"))


def spread(items: list[Prompt], count: int) -> list[Prompt]:
    """``count`` items spread evenly over the list: a deterministic sample across the alphabet
    (Asterisk's names group prompts by feature, so a prefix would be one feature's prompts)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]
