"""Which configured model serves a request: a pure function of the request, the settings and
which models are installed.

The rules, in order:

1. A request that names a configured model gets exactly that model; if it cannot serve the
   language or the task, that is the client's 400 saying why (never a silent switch).
2. An alias (``whisper-1``, ``es-ES_Telephony``, ``*_NarrowbandModel``...), a provider name we
   do not know (outside strict mode) or no name at all is a *preference*: its model, or
   ``default_model``. When that model cannot serve the request (Spanish asked of tiny.en, a
   translation asked of an English-only model) the request moves to the first installed model
   that can: one configured for that very language before one that speaks every language, then
   in configuration order. That is how ``whisper-1`` asked for Spanish lands on the multilingual
   model while English stays on the more accurate tiny.en.
3. In strict mode an unknown name is :class:`UnknownModel` (each dialect's native 400/404).
4. When no installed model can serve the request, the error names the language (or says why
   translation is impossible) and which configured model would serve it once installed.

No I/O happens here: the caller passes the installed set (:func:`.sources.installed_models`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..errors import ModelNotInstalled, NotFound, UnsupportedLanguage, UnsupportedTask
from ..languages import WHISPER_LANGUAGES
from ..settings import ModelSettings, Settings
from ..transcript import RecognitionOptions, Task
from .sources import install_hint

MULTILINGUAL_ENGINES = ("faster-whisper",)
"""Engines whose models can translate and detect languages (Whisper's multilingual models)."""


class UnknownModel(NotFound):
    code = "model_not_found"


@dataclass(frozen=True)
class ModelRequest:
    """What a request says about the model it wants, in our own words."""

    model: str | None = None
    """A configured name, an alias, a provider's name, or None."""
    language: str | None = None
    """ISO 639-1 code; None: the model's own language, or detection."""
    task: Task = Task.TRANSCRIBE
    detect_language: bool = False
    """The client asked for detection: a model that can detect is preferred."""
    language_candidates: tuple[str, ...] = ()
    """Languages detection may choose among; a model must speak at least one of them."""

    @classmethod
    def of(cls, options: RecognitionOptions) -> ModelRequest:
        return cls(
            model=options.model,
            language=options.language,
            task=options.task,
            detect_language=options.detect_language,
            language_candidates=options.language_candidates,
        )


def select_model(request: ModelRequest, settings: Settings, installed: Collection[str]) -> str:
    """The name of the configured model that runs ``request`` (see the module's rules)."""
    named = request.model
    if named is not None and named in settings.models:
        _check_explicit(named, settings.models[named], request, installed)
        return named
    preferred = alias_target(named, settings) if named else None
    if named and preferred is None and settings.providers.strict_model_names:
        raise UnknownModel(f"the model '{named}' does not exist")
    start = preferred or settings.default_model
    for name in _candidates(start, request, settings):
        if name in installed and _serves(settings.models[name], request):
            return name
    if request.detect_language and request.language is None:
        fallback = _without_detection(start, request, settings, installed)
        if fallback is not None:
            return fallback
    raise _no_model_error(request, settings, installed)


def resolve_model_name(requested: str | None, settings: Settings) -> str:
    """The configured model a name runs on, ignoring language and task: itself when configured,
    an alias's model, else the default (or :class:`UnknownModel` in strict mode).

    Kept for callers that route by name only (the PostgreSQL store, at submit, sees names that
    :func:`select_model` already resolved).
    """
    if requested and requested in settings.models:
        return requested
    target = alias_target(requested, settings) if requested else None
    if target is not None:
        return target
    if requested and settings.providers.strict_model_names:
        raise UnknownModel(f"the model '{requested}' does not exist")
    return settings.default_model


def alias_target(name: str | None, settings: Settings) -> str | None:
    """The configured model an alias names: exact aliases first, then ``*`` patterns, each in
    configuration order; None when ``name`` is no alias."""
    if not name:
        return None
    for model_name, model in settings.models.items():
        if name in model.aliases:
            return model_name
    for model_name, model in settings.models.items():
        if any("*" in alias and fnmatchcase(name, alias) for alias in model.aliases):
            return model_name
    return None


def known_names(settings: Settings) -> list[str]:
    """Configured names, then exact aliases: what strict mode accepts (patterns aside)."""
    aliases = [alias for model in settings.models.values() for alias in model.aliases if "*" not in alias]
    return list(settings.models) + [alias for alias in dict.fromkeys(aliases) if alias not in settings.models]


def speaks(model: ModelSettings, language: str) -> bool:
    """Whether ``model`` recognises ``language`` (an empty ``languages`` means all Whisper knows)."""
    if model.speaks_any_language:
        return model.engine in MULTILINGUAL_ENGINES and language in WHISPER_LANGUAGES
    return language in model.languages


def can_translate(model: ModelSettings) -> bool:
    """Only multilingual Whisper models translate; English-only ones (``tiny.en``) cannot."""
    return model.engine in MULTILINGUAL_ENGINES and (model.speaks_any_language or any(l != "en" for l in model.languages))


def can_detect(model: ModelSettings) -> bool:
    """Detection needs a multilingual Whisper model that speaks more than one language."""
    return model.engine in MULTILINGUAL_ENGINES and (model.speaks_any_language or len(model.languages) > 1)


def served_languages(settings: Settings, installed: Collection[str]) -> tuple[str, ...] | None:
    """ISO codes the installed models speak, sorted; None when one speaks every Whisper language."""
    models = [settings.models[name] for name in settings.models if name in installed]
    if any(model.speaks_any_language and model.engine in MULTILINGUAL_ENGINES for model in models):
        return None
    return tuple(sorted({code for model in models for code in model.languages}))


def _serves(model: ModelSettings, request: ModelRequest) -> bool:
    if request.task is Task.TRANSLATE and not can_translate(model):
        return False
    if request.language is not None:
        return speaks(model, request.language)
    if request.language_candidates and not any(speaks(model, code) for code in request.language_candidates):
        return False
    return not request.detect_language or can_detect(model)


def _candidates(start: str, request: ModelRequest, settings: Settings) -> list[str]:
    """``start``, the default model, then the others: those configured for the request's very
    language before those that speak every language, in configuration order within each."""
    rest = [name for name in settings.models if name not in (start, settings.default_model)]
    language = request.language
    dedicated = [name for name in rest if language is not None and language in settings.models[name].languages]
    others = [name for name in rest if name not in dedicated]
    return list(dict.fromkeys([start, settings.default_model, *dedicated, *others]))


def _without_detection(start: str, request: ModelRequest, settings: Settings, installed: Collection[str]) -> str | None:
    """Where no installed model can detect, the preferred one with its own language (an
    English-only deployment answers "en" to a detection request) if it speaks a candidate."""
    relaxed = ModelRequest(task=request.task, language_candidates=request.language_candidates)
    for name in _candidates(start, request, settings):
        if name in installed and _serves(settings.models[name], relaxed):
            return name
    return None


def _check_explicit(name: str, model: ModelSettings, request: ModelRequest, installed: Collection[str]) -> None:
    if name not in installed:
        raise ModelNotInstalled(f"the model '{name}' is configured but not installed here: {install_hint(model)}")
    if request.task is Task.TRANSLATE and not can_translate(model):
        raise UnsupportedTask(
            f"the model '{name}' speaks English only and cannot translate; translation needs a multilingual Whisper model"
        )
    if request.language is not None and not speaks(model, request.language):
        raise UnsupportedLanguage(
            f"the model '{name}' does not speak the language '{request.language}' (it speaks {_described(model)})",
            request.language,
        )
    if request.language is None and request.language_candidates and not any(speaks(model, c) for c in request.language_candidates):
        wanted = ", ".join(request.language_candidates)
        raise UnsupportedLanguage(f"the model '{name}' speaks none of the languages {wanted}", wanted)


def _no_model_error(request: ModelRequest, settings: Settings, installed: Collection[str]) -> Exception:
    """Why nothing installed serves ``request``, naming the language and what to install."""
    would = [name for name, model in settings.models.items() if name not in installed and _serves(model, request)]
    hint = f"; the configured model '{would[0]}' would, once installed: {install_hint(settings.models[would[0]])}" if would else ""
    if request.task is Task.TRANSLATE:
        return UnsupportedTask(
            "translation into English needs a multilingual Whisper model, and the installed models "
            f"({_listing(settings, installed)}) speak English only or cannot translate{hint}"
        )
    wanted = request.language or ", ".join(request.language_candidates) or "detected"
    return UnsupportedLanguage(
        f"no installed model speaks the language '{wanted}' (installed: {_listing(settings, installed)}){hint}", wanted
    )


def _listing(settings: Settings, installed: Iterable[str]) -> str:
    names = [name for name in settings.models if name in set(installed)]
    return "; ".join(f"{name}: {_described(settings.models[name])}" for name in names) or "none"


def _described(model: ModelSettings) -> str:
    return "every Whisper language" if model.speaks_any_language else ", ".join(model.languages)
