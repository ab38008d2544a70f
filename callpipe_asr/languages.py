"""Languages: the codes Whisper knows, and the choice of a language from a detector's guesses.

Engine-neutral and pure, so model selection, the pipeline and every dialect agree on what a
language code is and the tests can pin the rules down without a model.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

WHISPER_LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian",
    "kn": "kannada", "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque",
    "is": "icelandic", "hy": "armenian", "ne": "nepali", "mn": "mongolian", "bs": "bosnian",
    "kk": "kazakh", "sq": "albanian", "sw": "swahili", "gl": "galician", "mr": "marathi",
    "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali",
    "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik",
    "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian",
    "ln": "lingala", "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese",
    "yue": "cantonese",
}
"""Whisper's languages by ISO 639-1 code (``haw`` and ``yue`` are three letters), with the names
whisper-1's ``verbose_json`` reports (``"english"``, not ``"en"``)."""
WHISPER_LANGUAGES = frozenset(WHISPER_LANGUAGE_NAMES)


def base_language(code: str) -> str:
    """``es-MX`` / ``es_MX`` / ``ES`` -> ``es``: the ISO 639-1 part of a locale."""
    return code.replace("_", "-").split("-", 1)[0].strip().lower()


@dataclass(frozen=True)
class DetectedLanguage:
    """The language recognition runs in after detection, and how sure the detector was."""

    language: str
    confidence: float | None
    """Probability of ``language`` among the allowed languages; None where it is the fallback."""
    fell_back: bool = False
    """Whether detection was unsure (or found none allowed) and the fallback language was used."""


def choose_language(
    probabilities: Sequence[tuple[str, float]],
    allowed: Collection[str],
    min_confidence: float,
    fallback: str,
) -> DetectedLanguage:
    """The most probable allowed language, or ``fallback`` when it is less probable than
    ``min_confidence``.

    ``probabilities`` are the detector's (code, probability) guesses. With ``allowed`` languages
    the probabilities are renormalised over them: the deployment says the speech is one of
    those, so "60 % Spanish of the Spanish-or-French mass" is the confidence that matters, not the
    raw share the detector also gave to languages nobody calls in. Empty ``allowed``: every guess
    counts as it is.
    """
    candidates = [(code, max(0.0, p)) for code, p in probabilities if not allowed or code in allowed]
    total = sum(p for _, p in candidates)
    if not candidates or total <= 0.0:
        return DetectedLanguage(fallback, None, fell_back=True)
    code, probability = max(candidates, key=lambda item: item[1])
    confidence = probability / total if allowed else probability
    if confidence < min_confidence:
        return DetectedLanguage(fallback, None, fell_back=True)
    return DetectedLanguage(code, round(confidence, 4))
