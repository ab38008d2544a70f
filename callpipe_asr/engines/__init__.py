"""Speech engines behind one small interface, the registry that loads them, and the pure
selection of the model that serves a request."""

from .base import Engine, LanguageDetector
from .registry import ModelRegistry, check_models
from .selection import ModelRequest, UnknownModel, resolve_model_name, select_model

__all__ = [
    "Engine",
    "LanguageDetector",
    "ModelRegistry",
    "ModelRequest",
    "UnknownModel",
    "check_models",
    "resolve_model_name",
    "select_model",
]
