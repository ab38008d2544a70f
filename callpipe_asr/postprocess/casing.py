"""Casing and punctuation for engines that write bare lowercase words (PocketSphinx, Vosk, DeepSpeech).

"please enter your password i will call you back" reads badly in a voicemail e-mail. These
engines know nothing of sentences, but they do say when each word was spoken, and people pause
between sentences: a silence of :data:`SENTENCE_PAUSE_SECONDS` or more between two words (and
the end of every utterance the engine found) ends a sentence. Each sentence then starts with a
capital and ends with a full stop (a question mark after "what ...", "can you ..."), and in
English "i" becomes "I" and a short table fixes the misspellings character-level engines make
("dont", "alot"). Only spelling and typography change: the words stay the engine's, so the
case-insensitive word error rate cannot rise except through the spelling table, which only maps
onto standard spellings.

Whisper writes its own casing and punctuation; this is never applied to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..transcript import Segment, Transcript, Word

BARE_WORD_ENGINES = ("pocketsphinx", "vosk", "deepspeech")
"""Engines whose output is bare lowercase words; the others are left alone."""
SENTENCE_PAUSE_SECONDS = 0.2
"""A silence at least this long between two words ends a sentence. Chosen on PocketSphinx's
output over 40 multi-sentence Asterisk prompts: at 0.2 s, 14 of the 16 sentence starts it
recognised came out capitalised and 1 of 147 other words; at 0.25 s and up, 11 of 16 and none
(its word times absorb most of a pause, so the gaps it leaves between sentences are short)."""
PRONOUN_I = {"i": "I", "i'm": "I'm", "i'll": "I'll", "i've": "I've", "i'd": "I'd"}
SPELLING = {
    "alot": "a lot", "dont": "don't", "doesnt": "doesn't", "didnt": "didn't", "isnt": "isn't", "arent": "aren't",
    "wasnt": "wasn't", "werent": "weren't", "havent": "haven't", "hasnt": "hasn't", "hadnt": "hadn't",
    "couldnt": "couldn't", "wouldnt": "wouldn't", "shouldnt": "shouldn't", "wont": "won't", "cant": "can't",
    "im": "I'm", "ive": "I've", "youre": "you're", "theyre": "they're", "thats": "that's", "whats": "what's",
    "theres": "there's", "teh": "the", "recieve": "receive", "untill": "until",
    "adress": "address", "tommorow": "tomorrow", "tomorow": "tomorrow", "occured": "occurred", "seperate": "separate",
    "definately": "definitely", "thier": "their", "wich": "which", "becuase": "because", "beleive": "believe",
    "calender": "calendar", "goverment": "government", "messege": "message", "mesage": "message", "pleese": "please",
    "numbr": "number", "recieved": "received",
}
"""Misspellings character-level engines (DeepSpeech) write, each mapped onto the standard
spelling. Only English; "cant" and "wont" are words too, but never in a telephone message."""
QUESTION_WORDS = ("what", "where", "when", "why", "who", "whom", "whose", "how", "which")
QUESTION_OPENERS = ("can", "could", "would", "will", "do", "does", "did", "are", "is", "was", "have", "has", "shall",
                    "should", "may")
QUESTION_SUBJECTS = ("you", "i", "we", "they", "he", "she", "it", "this", "that", "there")


def restore_casing(transcript: Transcript, language: str | None, pause_seconds: float = SENTENCE_PAUSE_SECONDS) -> Transcript:
    """``transcript`` with sentence case and sentence-ending punctuation; English also gets "I"
    and the spelling table. Times, confidences and the words themselves are kept."""
    english = (language or transcript.language or "").startswith("en")
    segments = tuple(_segment(segment, english, pause_seconds) for segment in transcript.segments)
    return dataclasses.replace(transcript, segments=segments)


def sentence_breaks(words: Sequence[Word], pause_seconds: float = SENTENCE_PAUSE_SECONDS) -> list[bool]:
    """For each word, whether a sentence ends after it: at a pause of ``pause_seconds`` or more
    before the next word, and after the last word."""
    return [
        index == len(words) - 1 or words[index + 1].start - word.end >= pause_seconds
        for index, word in enumerate(words)
    ]


def _segment(segment: Segment, english: bool, pause_seconds: float) -> Segment:
    if segment.words:
        texts = [word.text.strip() for word in segment.words]
        ends = sentence_breaks(segment.words, pause_seconds)
    else:
        texts = segment.text.split()
        ends = [index == len(texts) - 1 for index in range(len(texts))]
    styled = style_words(texts, ends, english)
    if segment.words:
        words = tuple(dataclasses.replace(word, text=text) for word, text in zip(segment.words, styled))
        return dataclasses.replace(segment, text=" ".join(styled), words=words)
    return dataclasses.replace(segment, text=" ".join(styled))


def style_words(texts: Sequence[str], sentence_ends: Sequence[bool], english: bool) -> list[str]:
    """The words with spelling fixed (English), "I" capitalised (English), each sentence's first
    word capitalised and its last word followed by "." or "?"."""
    styled: list[str] = []
    sentence: list[str] = []
    for text, ends in zip(texts, sentence_ends):
        word = text.lower()
        if english:
            word = SPELLING.get(word, word)
            word = PRONOUN_I.get(word, word)
        sentence.append(word)
        if ends:
            styled.extend(_sentence(sentence, english))
            sentence = []
    if sentence:
        styled.extend(_sentence(sentence, english))
    return styled


def _sentence(words: list[str], english: bool) -> list[str]:
    if not words:
        return []
    question = english and _is_question(words)
    words = [_capitalised(words[0]), *words[1:]]
    if words[-1][-1:].isalnum():
        words[-1] += "?" if question else "."
    return words


def _is_question(words: list[str]) -> bool:
    first = words[0].lower()
    second = words[1].lower() if len(words) > 1 else ""
    return first in QUESTION_WORDS or (first in QUESTION_OPENERS and second in QUESTION_SUBJECTS)


def _capitalised(word: str) -> str:
    return word[:1].upper() + word[1:]
