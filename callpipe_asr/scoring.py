"""Word error rate with the one documented normaliser, shared by the benchmark and the tests.

A transcript is scored on its words, not its typography: Whisper writes "press 1" where a
reference says "press one", "#" where a caller said "pound", "10" for "ten". Both sides go through
:func:`normalize_text` first, so only real recognition errors count:

- lower case; English contractions written out ("I'm" -> "i am", "that's" -> "that is",
  "can't" -> "can not", "cannot" -> "can not"): a speaker's "I am" is heard as "I'm" as often as
  not; remaining apostrophes dropped ("o'clock" -> "oclock"); every other non-letter is a word
  break (hyphens, punctuation, musical notes);
- ``#`` -> "pound", ``*`` -> "star" (what a telephone keypad's keys are called when spoken),
  ``%`` -> "percent", ``&`` -> "and", ``+`` -> "plus", ``@`` -> "at";
- numbers read as spoken: "1,000" -> "one thousand"; "28.8" -> "twenty eight point eight";
  "1st" -> "first"; whole numbers of up to four digits as cardinals ("10" -> "ten", "2024" ->
  "two thousand twenty four"); longer digit strings and those with a leading zero (phone and
  account numbers) digit by digit ("01234" -> "zero one two three four").

No dependency beyond the standard library: the server never needs it, the benchmark and the tests
always do, and both must count the same way.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                    "nine": "ninth", "twelve": "twelfth"}
_SYMBOLS = {"#": " pound ", "*": " star ", "%": " percent ", "&": " and ", "+": " plus ", "@": " at "}
MAX_CARDINAL_DIGITS = 4
"""Longer digit strings are identifiers (phone, account, extension numbers), read digit by digit."""

_CONTRACTIONS = (
    (re.compile(r"\b(can)not\b"), r"\1 not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\blet's\b"), "let us"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"\bi'm\b"), "i am"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"\b(it|that|there|here|what|he|she|who|where)'s\b"), r"\1 is"),
)
"""Applied in order, on lower-case text with straight apostrophes. "'s" is written out only after
pronouns and question words (elsewhere it is a possessive); "'d" stays (would or had)."""
_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_NUMBER = re.compile(r"\d+")


def normalize_text(text: str) -> str:
    """Lower case, digits and keypad symbols as spoken, no punctuation, single spaces."""
    text = text.lower().replace("\u2019", "'")
    for pattern, expansion in _CONTRACTIONS:
        text = pattern.sub(expansion, text)
    text = text.replace("'", "")
    text = _THOUSANDS_SEPARATOR.sub("", text)
    text = _DECIMAL.sub(lambda m: f" {_number_words(m.group(1))} point {_digit_words(m.group(2))} ", text)
    text = _ORDINAL.sub(lambda m: f" {_ordinal_words(m.group(1))} ", text)
    text = _NUMBER.sub(lambda m: f" {_number_words(m.group(0))} ", text)
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = re.sub(r"[^a-z ]+", " ", text)
    return " ".join(text.split())


def normalized_words(text: str) -> list[str]:
    """The words :func:`normalize_text` leaves: what the benchmark counts as "words emitted"."""
    return normalize_text(text).split()


@dataclass(frozen=True)
class WordErrors:
    """Edit operations between a reference and a hypothesis, summable over a corpus.

    A corpus WER is total errors over total reference words, not a mean of per-file rates (a
    mean lets one-word prompts weigh as much as a voicemail).
    """

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        if self.reference_words == 0:
            raise ValueError("the word error rate needs at least one reference word")
        return self.errors / self.reference_words

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )


NO_ERRORS = WordErrors(0, 0, 0, 0)


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Levenshtein alignment over normalised words, counting each kind of edit."""
    return aligned_errors(normalized_words(reference), normalized_words(hypothesis))


def aligned_errors(ref: list[str], hyp: list[str]) -> WordErrors:
    """Levenshtein alignment of two word lists, counting each kind of edit."""
    # Each cell: (cost, substitutions, deletions, insertions) of the best alignment so far.
    previous = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i, ref_word in enumerate(ref, start=1):
        current = [(i, 0, i, 0)]
        for j, hyp_word in enumerate(hyp, start=1):
            diagonal = previous[j - 1]
            if ref_word == hyp_word:
                best = diagonal
            else:
                best = (diagonal[0] + 1, diagonal[1] + 1, diagonal[2], diagonal[3])
            up = previous[j]
            if up[0] + 1 < best[0]:
                best = (up[0] + 1, up[1], up[2] + 1, up[3])
            left = current[j - 1]
            if left[0] + 1 < best[0]:
                best = (left[0] + 1, left[1], left[2], left[3] + 1)
            current.append(best)
        previous = current
    _, substitutions, deletions, insertions = previous[-1]
    return WordErrors(substitutions, deletions, insertions, len(ref))


def normalize_other_language(text: str) -> str:
    """The normaliser for languages other than English (Spanish, French, Italian and Russian
    prompts): lower case, accents removed (``é`` -> ``e``, ``ñ`` -> ``n``, ``ç`` -> ``c``),
    apostrophes and hyphens split words (``l'heure`` -> ``l heure``), other punctuation dropped;
    digits stay digits (their spoken form differs per language). Letters of other scripts
    (Cyrillic, Hangul) are kept, with their diacritics removed the same way (Russian ``ё`` ->
    ``е``, which the reference texts and Whisper each write either way; ``й`` -> ``и`` on both
    sides alike)."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    for letter, spelled in (("œ", "oe"), ("æ", "ae"), ("ß", "ss")):
        stripped = stripped.replace(letter, spelled)
    return " ".join(re.sub(r"[\W_]+", " ", stripped).split())


def other_language_word_errors(reference: str, hypothesis: str) -> WordErrors:
    """:func:`word_errors` with :func:`normalize_other_language` on both sides."""
    return aligned_errors(normalize_other_language(reference).split(), normalize_other_language(hypothesis).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after normalising both."""
    return word_errors(reference, hypothesis).rate


def _digit_words(digits: str) -> str:
    return " ".join(_DIGITS[int(d)] for d in digits)


def _number_words(digits: str) -> str:
    """Whole numbers of up to four digits as cardinals; identifiers digit by digit."""
    if len(digits) > MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits.startswith("0")):
        return _digit_words(digits)
    return _cardinal(int(digits))


def _cardinal(number: int) -> str:
    if number < 10:
        return _DIGITS[number]
    if number < 20:
        return _TEENS[number - 10]
    if number < 100:
        tens, units = divmod(number, 10)
        return _TENS[tens] + (f" {_DIGITS[units]}" if units else "")
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return f"{_DIGITS[hundreds]} hundred" + (f" {_cardinal(rest)}" if rest else "")
    thousands, rest = divmod(number, 1000)
    return f"{_cardinal(thousands)} thousand" + (f" {_cardinal(rest)}" if rest else "")


def _ordinal_words(digits: str) -> str:
    words = _number_words(digits).split()
    last = words[-1]
    if last in _ORDINAL_ENDINGS:
        words[-1] = _ORDINAL_ENDINGS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


@dataclass(frozen=True)
class CasingScore:
    """How a hypothesis capitalises, judged on the words it got right: of the reference's
    sentence starts, how many it capitalised; of the other words, how many it capitalised
    anyway ("I" and words the reference itself capitalises aside). Summable over a corpus."""

    sentence_starts: int
    starts_capitalised: int
    inner_words: int
    inner_capitalised: int

    def __add__(self, other: CasingScore) -> CasingScore:
        return CasingScore(
            self.sentence_starts + other.sentence_starts,
            self.starts_capitalised + other.starts_capitalised,
            self.inner_words + other.inner_words,
            self.inner_capitalised + other.inner_capitalised,
        )


def casing_score(reference: str, hypothesis: str) -> CasingScore:
    """Align the normalised words (as :func:`word_errors` does) and look at the case of each
    hypothesis word that matches its reference word."""
    ref = _tagged_words(reference, sentence_marks=True)
    hyp = _tagged_words(hypothesis, sentence_marks=False)
    starts = starts_capitalised = inner = inner_capitalised = 0
    for i, j in _matches([w for w, _, _ in ref], [w for w, _, _ in hyp]):
        _, starts_sentence, capital_in_reference = ref[i]
        capitalised = hyp[j][2]
        if starts_sentence:
            starts += 1
            starts_capitalised += capitalised
        elif not capital_in_reference and ref[i][0] != "i":
            inner += 1
            inner_capitalised += capitalised
    return CasingScore(starts, starts_capitalised, inner, inner_capitalised)


def _tagged_words(text: str, sentence_marks: bool) -> list[tuple[str, bool, bool]]:
    """(normalised word, starts a sentence, written with a capital) for each word of ``text``;
    a token that normalises to several words tags the first."""
    tagged: list[tuple[str, bool, bool]] = []
    starts = True
    for token in text.split():
        words = normalized_words(token)
        for index, word in enumerate(words):
            tagged.append((word, sentence_marks and starts and index == 0, index == 0 and token[:1].isupper()))
        if words:
            starts = token.rstrip("\"')»”").endswith((".", "?", "!"))
    return tagged


def _matches(ref: list[str], hyp: list[str]) -> list[tuple[int, int]]:
    """Index pairs of equal words on one minimal-edit alignment of ``ref`` and ``hyp``."""
    rows, cols = len(ref) + 1, len(hyp) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            same = ref[i - 1] == hyp[j - 1]
            cost[i][j] = min(cost[i - 1][j - 1] + (0 if same else 1), cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    pairs: list[tuple[int, int]] = []
    i, j = len(ref), len(hyp)
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1] and cost[i][j] == cost[i - 1][j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j - 1] + 1:
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]
