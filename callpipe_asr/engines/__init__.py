"""Speech engines behind one small interface, and the registry that loads them."""

from .base import Engine
from .registry import ModelRegistry, UnknownModel, resolve_model_name

__all__ = ["Engine", "ModelRegistry", "UnknownModel", "resolve_model_name"]
