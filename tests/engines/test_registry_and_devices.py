"""The registry (load once, preload only what is asked, unload when idle) and the device rules
(cpu, cuda, auto; a clear start-up error where CUDA is unusable). GPU tests skip on machines
without a usable CUDA device, saying so."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from callpipe_asr.engines import ModelRegistry, check_models, registry as registry_module
from callpipe_asr.engines.devices import Placement, cuda_device_count, place
from callpipe_asr.errors import EngineError
from callpipe_asr.settings import BUNDLED_POCKETSPHINX, ModelSettings, Settings, load_settings
from callpipe_asr.transcript import RecognitionOptions, Transcript

CUDA_DEVICES = cuda_device_count()
needs_gpu = pytest.mark.skipif(CUDA_DEVICES == 0, reason="no usable CUDA device here (CTranslate2 sees none); GPU tests run on a GPU machine")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LoadedModel:
    """A test double for a loaded engine: records that it was loaded and closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def transcribe(self, samples: Any, options: RecognitionOptions) -> Transcript:
        return Transcript(segments=(), language="en", duration=0.0, model=self.name)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LoadedModel]]:
    """Every engine the registry loads, in order (no model files are read)."""
    loaded: list[LoadedModel] = []

    def load(name: str, model: ModelSettings, data_dir: Path, concurrency: int) -> LoadedModel:
        engine = LoadedModel(name)
        loaded.append(engine)
        return engine

    monkeypatch.setattr(registry_module, "load_engine", load)
    yield loaded


def settings_with(**models: ModelSettings) -> Settings:
    return replace(load_settings(None, environ={}), default_model=next(iter(models)), models=dict(models))


def test_only_the_default_model_and_preloaded_ones_load_at_start_up(loads: list[LoadedModel]) -> None:
    settings = settings_with(main=ModelSettings(), warm=ModelSettings(preload=True), cold=ModelSettings())
    registry = ModelRegistry(settings, concurrency=1)
    registry.load_at_startup()
    assert [engine.name for engine in loads] == ["main", "warm"]
    assert not registry.is_loaded("cold")
    registry.get("cold")
    registry.get("cold")
    assert [engine.name for engine in loads] == ["main", "warm", "cold"]


def test_an_idle_model_is_unloaded_but_never_while_in_use_nor_a_preloaded_one(loads: list[LoadedModel]) -> None:
    settings = settings_with(
        main=ModelSettings(idle_unload_seconds=10), cold=ModelSettings(idle_unload_seconds=60), kept=ModelSettings()
    )
    clock = Clock()
    registry = ModelRegistry(settings, concurrency=1, clock=clock)
    registry.load_at_startup()
    registry.get("kept")
    with registry.use("cold") as engine:
        clock.now += 120
        assert registry.unload_idle() == []  # in use
    clock.now += 59
    assert registry.unload_idle() == []
    clock.now += 1
    assert registry.unload_idle() == ["cold"]
    assert isinstance(engine, LoadedModel) and engine.closed
    assert registry.is_loaded("main") and registry.is_loaded("kept")  # preloaded, or no idle limit
    with registry.use("cold"):
        pass
    assert [e.name for e in loads].count("cold") == 2  # loaded again when asked for
    assert registry.idle_check_seconds() == 2.5


def test_a_model_loads_once_when_threads_ask_together(loads: list[LoadedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_with(main=ModelSettings())
    registry = ModelRegistry(settings, concurrency=4)
    threads = [threading.Thread(target=registry.get, args=("main",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1


# -- devices ----------------------------------------------------------------------------------------


def test_device_placement_rules() -> None:
    cpu = ModelSettings()
    assert place("m", cpu, gpus=0) == Placement("cpu", 0, "int8")
    auto = ModelSettings(device="auto", compute_type="float16")
    assert place("m", auto, gpus=0) == Placement("cpu", 0, "int8")  # half precision falls back to int8 on a CPU
    with pytest.raises(EngineError, match="device: cuda.*no usable CUDA device.*callpipe-asr\\[gpu\\]"):
        place("m", ModelSettings(device="cuda", compute_type="float16"), gpus=0)
    with pytest.raises(EngineError, match="device_index 2.*only 1 CUDA device"):
        place("m", ModelSettings(device="cuda", device_index=2), gpus=1)
    sphinx = ModelSettings(engine="pocketsphinx", source=BUNDLED_POCKETSPHINX, device="auto")
    assert place("m", sphinx, gpus=1).device == "cpu"  # only faster-whisper runs on a GPU


def test_check_models_reports_cuda_and_missing_preloaded_models(tmp_path: Path) -> None:
    settings = replace(
        load_settings(None, environ={}), data_dir=tmp_path,
        models={"tiny.en": ModelSettings(device="cuda"), "other": ModelSettings(source="absent", preload=True),
                "lazy": ModelSettings(source="absent-too")},
    )
    problems = check_models(settings, gpus=0)
    assert any("'tiny.en' asks for device: cuda" in p for p in problems)
    assert any("model 'other'" in p and "no CTranslate2 model" in p for p in problems)
    assert not any("lazy" in p for p in problems)  # loads on first use: its requests get a 400 instead


@pytest.mark.skipif(CUDA_DEVICES > 0, reason="this machine has a usable CUDA device: the no-CUDA start-up error cannot happen")
def test_serve_with_cuda_on_a_machine_without_it_stops_at_start_up(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  tiny.en:\n    device: cuda\n    compute_type: float16\n")
    result = subprocess.run(
        [sys.executable, "-m", "callpipe_asr", "serve", "--config", str(config), "--port", "1", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "cannot start: model 'tiny.en' asks for device: cuda" in result.stderr
    assert "callpipe-asr[gpu]" in result.stderr


@needs_gpu
@pytest.mark.e2e
@pytest.mark.parametrize("compute_type", ["float16", "int8_float16"])
def test_tiny_en_recognises_on_the_gpu(tmp_path: Path, compute_type: str, prompt: Any) -> None:
    from asr_testkit import word_error_rate
    from callpipe_asr.pipeline import Recognizer

    settings = replace(load_settings(None, environ={}), data_dir=tmp_path,
                       models={"tiny.en": ModelSettings(device="cuda", compute_type=compute_type)})
    registry = ModelRegistry(settings, concurrency=1)
    transcript = Recognizer(settings, registry).recognize(prompt.audio, None, RecognitionOptions())
    registry.close()
    assert word_error_rate(prompt.text, transcript.text) < 0.2
