"""Accuracy parts: word error rate by codec, words invented on non-speech, sentences kept in long
voicemails, and the decoding path's fidelity against faster-whisper's own decoder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from callpipe_asr.settings import Settings

from .corpus import Corpus
from .direct import Outcome, Pipeline, Request, run_concurrently, with_model
from .evaluate import Score, Totals, run_totals, score, total

SPEECH_KINDS = ("prompt", "voicemail", "long")


def requests_for(corpus: Corpus, kinds: Sequence[str], codecs: Sequence[str]) -> list[Request]:
    """Every recording of ``kinds`` in every one of ``codecs`` it has, recordings in corpus order."""
    return [
        Request(recording, codec, recording.path(corpus.root, codec))
        for codec in codecs
        for recording in corpus.of_kind(*kinds)
        if codec in recording.files
    ]


@dataclass(frozen=True)
class Invented:
    """A non-speech recording that came back with words."""

    recording: str
    codec: str
    words: int
    text: str


@dataclass
class AccuracyResults:
    scores: dict[tuple[str, str], list[Score]] = field(default_factory=dict)
    """(kind, codec) -> the score of each recording."""
    decoded_scores: dict[tuple[str, str], list[Score]] = field(default_factory=dict)
    """The same, without the files that failed (what the model did with what it was given)."""
    nonspeech: dict[str, Totals] = field(default_factory=dict)
    """Codec -> totals over the non-speech recordings."""
    invented: list[Invented] = field(default_factory=list)
    sentences: list[tuple[str, str, int, int, int]] = field(default_factory=list)
    """(recording, codec, sentences, present, words after the speech) for every composite."""
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    """(recording, codec, error) for every file that could not be recognised (scored as empty)."""
    seconds: float = 0.0

    def totals(self, kinds: Sequence[str], codec: str, decoded_only: bool = False) -> Totals:
        scores = self.decoded_scores if decoded_only else self.scores
        return total([item for kind in kinds for item in scores.get((kind, codec), [])])


def measure_accuracy(pipeline: Pipeline, corpus: Corpus, codecs: Sequence[str], long_codecs: Sequence[str]) -> AccuracyResults:
    """Prompts and voicemails in every one of ``codecs``, long voicemails in ``long_codecs`` (the
    bulk of the audio: PCM and the telephone codecs), every non-speech recording, through the
    pipeline with the server's options, ``jobs.workers`` at a time."""
    results = AccuracyResults()
    requests = requests_for(corpus, ("prompt", "voicemail"), codecs) + requests_for(corpus, ("long",), long_codecs)
    speech = pipeline.run("accuracy", requests, concurrency=8)
    for outcome in speech.outcomes:
        request = outcome.request
        item = score(request.recording, outcome.transcript)
        results.scores.setdefault((request.recording.kind, request.codec), []).append(item)
        if outcome.error is None:
            results.decoded_scores.setdefault((request.recording.kind, request.codec), []).append(item)
        if request.recording.kind != "prompt":
            results.sentences.append((request.recording.id, request.codec, item.sentences, item.sentences_present,
                                      item.words_after_speech))
    nonspeech_codecs = sorted({codec for r in corpus.of_kind("nonspeech") for codec in r.files})
    silent = pipeline.run("nonspeech", requests_for(corpus, ("nonspeech",), nonspeech_codecs), concurrency=8)
    results.nonspeech, results.invented = _nonspeech_totals(silent.outcomes)
    results.failures = [(o.request.recording.id, o.request.codec, o.error or "")
                        for o in speech.failures + silent.failures]
    results.seconds = speech.wall + silent.wall
    return results


def _nonspeech_totals(outcomes: Sequence[Outcome]) -> tuple[dict[str, Totals], list[Invented]]:
    by_codec: dict[str, list[Score]] = {}
    invented = []
    for outcome in outcomes:
        item = score(outcome.request.recording, outcome.transcript)
        by_codec.setdefault(outcome.request.codec, []).append(item)
        if item.words_emitted:
            invented.append(Invented(outcome.request.recording.id, outcome.request.codec, item.words_emitted,
                                     outcome.transcript.text))
    return {codec: total(items) for codec, items in by_codec.items()}, invented


@dataclass(frozen=True)
class Fidelity:
    """The same engine and filters on the same files: our decoder and resampler vs
    faster-whisper's ``decode_audio``."""

    codec: str
    ours: Totals
    faster_whisper_decode: Totals
    differing: tuple[tuple[str, str, str], ...] = ()
    """(recording, our transcript, theirs) wherever the two transcripts differ."""


def measure_fidelity(settings: Settings, corpus: Corpus, codecs: Sequence[str], kinds: Sequence[str]) -> list[Fidelity]:
    """Both decodings of every file through the same engine and filters, greedy only
    (``temperatures: [0.0]``): the temperature fallback samples at random, so two runs of the
    same audio may differ by a word; without it the decoding is the only difference left."""
    pipeline = Pipeline(with_model(settings, temperatures=(0.0,)))
    results = []
    try:
        for codec in codecs:
            requests = requests_for(corpus, kinds, [codec])
            ours = run_concurrently(f"fidelity ours {codec}", requests, settings.jobs.workers, pipeline.recognize)
            theirs = run_concurrently(f"fidelity fw-decode {codec}", requests, settings.jobs.workers,
                                      pipeline.recognize_own_decode)
            differing = tuple((a.request.recording.id, a.transcript.text.strip(), b.transcript.text.strip())
                              for a, b in zip(ours.outcomes, theirs.outcomes) if a.transcript.text != b.transcript.text)
            results.append(Fidelity(codec, run_totals(ours), run_totals(theirs), differing))
    finally:
        pipeline.close()
    return results


@dataclass(frozen=True)
class VadMargin:
    """How far apart the Silero VAD holds speech and non-speech here: the highest probability it
    gives any 32 ms frame of a non-speech recording, against the lowest peak among the prompts
    (every prompt needs one frame above the threshold to be heard at all)."""

    nonspeech_max: float
    nonspeech_worst: str
    prompt_peak_min: float
    prompt_weakest: str
    threshold: float


def measure_vad_margin(corpus: Corpus, threshold: float) -> VadMargin:
    import numpy as np
    from faster_whisper import decode_audio
    from faster_whisper.vad import get_vad_model

    model = get_vad_model()

    def peak(recording_path: str) -> float:
        samples = decode_audio(recording_path, sampling_rate=16_000)
        padded = np.pad(samples, (0, 512 - len(samples) % 512))
        return float(np.max(model(padded)))

    nonspeech = {r.id: peak(str(r.path(corpus.root))) for r in corpus.of_kind("nonspeech")}
    prompts = {r.id: peak(str(r.path(corpus.root))) for r in corpus.of_kind("prompt")}
    worst = max(nonspeech, key=nonspeech.__getitem__)
    weakest = min(prompts, key=prompts.__getitem__)
    return VadMargin(nonspeech[worst], worst, prompts[weakest], weakest, threshold)


def words_on_nonspeech(outcomes: Sequence[Outcome]) -> tuple[int, list[Invented]]:
    """Total words emitted over non-speech outcomes, and which recordings had any."""
    _, invented = _nonspeech_totals(outcomes)
    return sum(i.words for i in invented), invented
