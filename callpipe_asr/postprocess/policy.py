"""The thresholds the filters apply, taken from a model's settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import ModelSettings


@dataclass(frozen=True)
class FilterPolicy:
    """What counts as invented text for one model. Defaults live in :class:`ModelSettings` only;
    build one with :meth:`from_model_settings`."""

    no_speech_threshold: float
    """A segment above this no-speech probability ..."""
    log_prob_threshold: float
    """... and below this average log-probability is silence the model wrote words for."""
    compression_ratio_threshold: float
    """Text that compresses better than this is a repetition loop."""
    max_ngram_repeats: int
    """Runs of one word or phrase longer than this are collapsed; 0 turns the guard off."""
    drop_known_hallucinations: bool
    weak_no_speech_probability: float
    weak_avg_logprob: float
    weak_word_confidence: float

    @classmethod
    def from_model_settings(cls, model: ModelSettings) -> FilterPolicy:
        return cls(
            no_speech_threshold=model.no_speech_threshold,
            log_prob_threshold=model.log_prob_threshold,
            compression_ratio_threshold=model.compression_ratio_threshold,
            max_ngram_repeats=model.max_ngram_repeats,
            drop_known_hallucinations=model.drop_known_hallucinations,
            weak_no_speech_probability=model.weak_no_speech_probability,
            weak_avg_logprob=model.weak_avg_logprob,
            weak_word_confidence=model.weak_word_confidence,
        )
