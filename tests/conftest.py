"""Shared fixtures: real Asterisk prompts with their reference texts, and settings in a temp dir.

Plain helpers live in importable modules (``asr_testkit``: Prompt, word_error_rate;
``server_testkit``: server processes; ``ops_testkit``), never in a conftest: every ``conftest.py``
outside a package is imported under the one module name ``conftest``, so ``from conftest import``
reaches whichever folder's conftest pytest imported last."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from asr_testkit import REFERENCES, Prompt, load_prompts
from pg_server import postgres_server  # noqa: F401 - one PostgreSQL server for the whole session
from callpipe_asr.settings import Settings, load_settings


@pytest.fixture(scope="session")
def prompts() -> dict[str, Prompt]:
    """Every English Asterisk prompt that has a wav file and a spoken (not [sound]) reference."""
    if not REFERENCES.exists():
        pytest.fail("Debian packages asterisk-core-sounds-en and -en-wav are missing: run ./scripts/test")
    return load_prompts()


@pytest.fixture(scope="session")
def prompt(prompts: dict[str, Prompt]) -> Prompt:
    """One 5.5 s sentence, the workhorse of the fast tests."""
    return prompts["agent-alreadyon"]


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with the data directory in tmp_path; keyword arguments are dotted overrides
    written with ``__`` (``jobs__max_queued=2``)."""

    def build(**overrides: Any) -> Settings:
        dotted = {key.replace("__", "."): value for key, value in overrides.items()}
        dotted.setdefault("data_dir", tmp_path / "data")
        return load_settings(None, environ={}, overrides=dotted)

    return build
