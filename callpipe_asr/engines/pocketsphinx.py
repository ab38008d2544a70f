"""CMU PocketSphinx: the lightest engine (about 115 MiB), for the small boxes the project began on.

The recording is fed in 30 ms chunks to PocketSphinx's own endpointer (WebRTC-style voice
activity detection, in C), which cuts it into utterances at pauses; each utterance is decoded
whole with batch cepstral mean normalisation, and its words come from the decoder's
segmentation: frames at the model's frame rate (100 per second) give the times, alternate
pronunciations written ``word(2)`` are cleaned to ``word``, and fillers (``<sil>``, ``[NOISE]``,
``++BREATH++``) are dropped.

Why whole utterances: with the default live normalisation the decoder's acoustic state carries
over from one request to the next, so a caller's words depended on who called before (the same
prompt came back differently). Batch normalisation over each utterance is independent of
history and was also the most accurate on Asterisk prompts: corpus WER 0.53 against 0.97 for
chunked live normalisation from a fresh start (14 prompts). PocketSphinx writes bare lowercase words;
the pipeline restores casing and full stops (:mod:`..postprocess.casing`).

A decoder is not thread-safe, so one decoder serves one recognition at a time; several worker
threads queue on it (on a small box that is one worker anyway).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..settings import ModelSettings
from ..transcript import RecognitionOptions, Segment, Transcript, Word
from .base import SAMPLE_RATE_HZ
from .pcm import resample, segment_of, to_pcm16

log = logging.getLogger(__name__)

ALTERNATE = re.compile(r"\(\d+\)$")
"""``read(2)``: the dictionary's second pronunciation of "read"."""
FILLER_PREFIXES = ("<", "[", "+")
"""``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``++BREATH++``: not words."""
ENDPOINTER_WINDOW_SECONDS = 0.3
ENDPOINTER_RATIO = 0.9


class PocketSphinxEngine:
    """One PocketSphinx decoder for a model directory (acoustic model, language model, dictionary)."""

    def __init__(self, name: str, model_dir: Path, settings: ModelSettings) -> None:
        try:
            import pocketsphinx  # imported here: only this engine needs it
        except ImportError as exc:
            raise EngineError("the pocketsphinx engine needs the package pocketsphinx: pip install 'callpipe-asr[pocketsphinx]'") from exc
        self.name = name
        self._language = settings.languages[0] if settings.languages else "en"
        self._module = pocketsphinx
        hmm, lm, dictionary = model_files(model_dir)
        started = time.perf_counter()
        try:
            self._decoder = pocketsphinx.Decoder(hmm=str(hmm), lm=str(lm), dict=str(dictionary), cmn="batch", loglevel="FATAL")
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"model '{name}': PocketSphinx could not load {model_dir}: {exc}") from exc
        self._rate = int(self._decoder.config["samprate"])
        self._frame_rate = int(self._decoder.config["frate"])
        self._lock = threading.Lock()
        log.info("model %s loaded from %s in %.2f s (PocketSphinx, %d Hz)", name, model_dir, time.perf_counter() - started, self._rate)

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        duration = len(samples) / SAMPLE_RATE_HZ
        pcm = to_pcm16(resample(samples, SAMPLE_RATE_HZ, self._rate))
        segments: list[Segment] = []
        with self._lock:
            for start_seconds, utterance in self._utterances(pcm):
                segment = segment_of(self._decode(utterance, start_seconds))
                if segment is not None:
                    segments.append(segment)
        return Transcript(segments=tuple(segments), language=options.language or self._language, duration=duration, model=self.name)

    def _utterances(self, pcm: Any) -> list[tuple[float, Any]]:
        """(start in seconds, int16 samples) of each stretch of speech the endpointer finds."""
        try:
            endpointer = self._module.Endpointer(window=ENDPOINTER_WINDOW_SECONDS, ratio=ENDPOINTER_RATIO, sample_rate=self._rate)
        except ValueError as exc:
            raise EngineError(f"PocketSphinx cannot segment {self._rate} Hz audio: {exc}") from exc
        frame = endpointer.frame_bytes // 2
        found: list[tuple[float, Any]] = []
        pieces: list[bytes] = []
        for offset in range(0, len(pcm), frame):
            block = pcm[offset:offset + frame].tobytes()
            speech = endpointer.end_stream(block) if len(block) < frame * 2 else endpointer.process(block)
            if speech is not None:
                pieces.append(speech)
                if not endpointer.in_speech:
                    found.append((float(endpointer.speech_start), _samples(b"".join(pieces))))
                    pieces = []
        if pieces:  # speech running to the very end
            found.append((float(endpointer.speech_start), _samples(b"".join(pieces))))
        return found

    def _decode(self, pcm: Any, offset_seconds: float) -> list[Word]:
        decoder = self._decoder
        try:
            decoder.start_utt()
            decoder.process_raw(pcm.tobytes(), False, True)  # full utterance: batch normalisation
            decoder.end_utt()
            raw = [(seg.word, seg.start_frame, seg.end_frame) for seg in decoder.seg()]
        except RuntimeError as exc:
            raise EngineError(f"PocketSphinx failed: {exc}") from exc
        return words_from_frames(raw, self._frame_rate, offset_seconds)

    def close(self) -> None:
        del self._decoder


def words_from_frames(raw: list[tuple[str, int, int]], frame_rate: int, offset_seconds: float = 0.0) -> list[Word]:
    """Words from PocketSphinx's segmentation: ``(word, start_frame, end_frame)``, fillers
    dropped, alternates cleaned, frames turned into seconds from the start of the recording."""
    words: list[Word] = []
    for text, start_frame, end_frame in raw:
        word = clean_word(text)
        if word:
            words.append(Word(
                text=word,
                start=round(offset_seconds + start_frame / frame_rate, 3),
                end=round(offset_seconds + (end_frame + 1) / frame_rate, 3),
            ))
    return words


def clean_word(text: str) -> str | None:
    """``hello(2)`` -> ``hello``; fillers and silences -> None."""
    if not text or text.startswith(FILLER_PREFIXES):
        return None
    return ALTERNATE.sub("", text) or None


def model_files(model_dir: Path) -> tuple[Path, Path, Path]:
    """The acoustic model directory (the one holding ``mdef``), the language model and the
    dictionary of a PocketSphinx model directory (the layout of ``pocketsphinx/model/en-us``)."""
    if not model_dir.is_dir():
        raise EngineError(f"no PocketSphinx model directory at {model_dir}")
    hmm = next((p.parent for p in sorted(model_dir.rglob("mdef"))), None)
    lms = sorted(p for p in model_dir.iterdir() if p.name.endswith((".lm.bin", ".lm", ".lm.dmp")) and "phone" not in p.name)
    dictionaries = sorted(model_dir.glob("*.dict"))
    missing = [what for what, found in (("an acoustic model (a folder with mdef)", hmm), ("a language model (*.lm.bin)", lms),
                                        ("a dictionary (*.dict)", dictionaries)) if not found]
    if missing or hmm is None:
        raise EngineError(f"the PocketSphinx model directory {model_dir} lacks {', '.join(missing)}")
    return hmm, lms[0], dictionaries[0]


def _samples(data: bytes) -> Any:
    import numpy as np

    return np.frombuffer(data, dtype="<i2")
