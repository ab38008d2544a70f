"""The DeepSpeech / Coqui STT adapter.

Inference runs against a STAND-IN (``deepspeech_standin.py``) that implements the packages'
documented API: neither package installs on this Python and no DeepSpeech model is on PyPI. The
start-up and error paths also run against the real packages where an old Python under pyenv has
them (``deepspeech`` 0.9.3 on 3.9, ``stt`` 1.4.0 on 3.10); those tests skip, saying why, elsewhere.
"""

from __future__ import annotations

import glob
import importlib.machinery
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import deepspeech_standin as standin
from callpipe_asr.engines import ModelRegistry
from callpipe_asr.engines.deepspeech import DeepSpeechEngine, windows, words_from_tokens
from callpipe_asr.errors import EngineError
from callpipe_asr.pipeline import Recognizer
from callpipe_asr.settings import ModelSettings, load_settings
from callpipe_asr.transcript import RecognitionOptions, Word

REPO = Path(__file__).resolve().parents[2]
RATE = 16_000


@pytest.fixture
def stt_package(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The stand-in installed as ``stt`` (and ``deepspeech`` hidden), as the adapter finds it."""
    module = ModuleType("stt")
    for name in ("Model", "Metadata", "CandidateTranscript", "TokenMetadata", "version"):
        setattr(module, name, getattr(standin, name))
    module.__spec__ = importlib.machinery.ModuleSpec("stt", None)
    monkeypatch.setitem(sys.modules, "stt", module)
    monkeypatch.setitem(sys.modules, "deepspeech", None)  # type: ignore[arg-type]
    standin.Model.instances.clear()
    yield module
    standin.Model.instances.clear()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pbmm"
    path.write_bytes(standin.MODEL_MAGIC + b"\0" * 64)
    return path


def bursts(starts: list[float], total_seconds: float, rate: int = RATE) -> np.ndarray:
    """Silence with a 0.3 s tone at each of ``starts``: what the stand-in hears as words."""
    audio = np.zeros(int(total_seconds * rate), dtype=np.float32)
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(0.3 * rate)) / rate).astype(np.float32)
    for start in starts:
        at = int(start * rate)
        audio[at:at + len(tone)] = tone
    return audio


def test_words_are_built_from_character_tokens() -> None:
    tokens = [("h", 1.0), ("i", 1.02), (" ", 1.04), ("y", 1.5), ("o", 1.52), ("u", 1.54)]
    assert words_from_tokens(tokens, offset_seconds=10.0) == [
        Word("hi", 11.0, 11.04), Word("you", 11.5, 11.56),
    ]
    assert words_from_tokens([]) == []


def test_long_audio_is_cut_in_windows_at_quiet_places() -> None:
    starts = [1.0 + 1.9 * i for i in range(30)]  # a tone every 1.9 s for 58 s
    pcm = (bursts(starts, 60.0) * 32767).astype(np.int16)
    ranges = windows(pcm, RATE, window_seconds=20.0)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(pcm)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    for start, end in ranges:
        assert end - start <= 20 * RATE
    for _, cut in ranges[:-1]:  # never inside a tone
        assert not any(s * RATE <= cut < (s + 0.3) * RATE for s in starts)


def test_the_stand_in_recognises_through_the_adapter_with_times_across_windows(
    stt_package: ModuleType, model_file: Path, tmp_path: Path
) -> None:
    engine = DeepSpeechEngine("ds", model_file, ModelSettings(engine="deepspeech", source=str(model_file)), tmp_path)
    starts = [0.5 + 3.0 * i for i in range(16)]  # 16 words over 48 s: three windows
    transcript = engine.transcribe(bursts(starts, 48.0), RecognitionOptions())
    words = transcript.words
    assert [w.text for w in words] == [standin.WORDS[i % len(standin.WORDS)] for i in range(16)]
    assert [w.start for w in words] == pytest.approx(starts, abs=0.03)
    assert all(w.end > w.start for w in words)
    assert len(transcript.segments) == len(standin.Model.instances[0].calls.audio_lengths) == 3
    assert transcript.language == "en" and transcript.model == "ds"


def test_an_8_khz_model_gets_8_khz_audio(stt_package: ModuleType, model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standin.Model, "sample_rate", 8000)
    engine = DeepSpeechEngine("ds", model_file, ModelSettings(engine="deepspeech", source=str(model_file)), tmp_path)
    transcript = engine.transcribe(bursts([1.0, 2.5], 4.0), RecognitionOptions())
    assert standin.Model.instances[0].calls.audio_lengths == [4 * 8000]
    assert [w.start for w in transcript.words] == pytest.approx([1.0, 2.5], abs=0.03)


def test_scorer_weights_and_beam_width_are_passed_on(stt_package: ModuleType, model_file: Path, tmp_path: Path) -> None:
    (tmp_path / "lm.scorer").write_bytes(b"scorer")
    settings = ModelSettings(engine="deepspeech", source=str(model_file), scorer="lm.scorer",
                             scorer_alpha_beta=(0.93, 1.18), beam_size=500)
    DeepSpeechEngine("ds", model_file, settings, tmp_path)
    calls = standin.Model.instances[0].calls
    assert calls.scorer == str(tmp_path / "lm.scorer")
    assert calls.alpha_beta == (0.93, 1.18)
    assert calls.beam_width == 500


def test_start_up_errors_name_the_missing_file_or_package(
    stt_package: ModuleType, model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ModelSettings(engine="deepspeech", source=str(model_file))
    with pytest.raises(EngineError, match="no scorer file at .*missing.scorer"):
        DeepSpeechEngine("ds", model_file, replace(settings, scorer="missing.scorer"), tmp_path)
    with pytest.raises(EngineError, match="no DeepSpeech model file at .*absent.pbmm"):
        DeepSpeechEngine("ds", tmp_path / "absent.pbmm", settings, tmp_path)
    (tmp_path / "broken.pbmm").write_bytes(b"garbage")
    with pytest.raises(EngineError, match="stt could not load .*broken.pbmm.*CreateModel failed"):
        DeepSpeechEngine("ds", tmp_path / "broken.pbmm", settings, tmp_path)
    monkeypatch.setitem(sys.modules, "stt", None)  # type: ignore[arg-type]
    with pytest.raises(EngineError, match=r"stt or deepspeech.*callpipe-asr\[deepspeech\].*3\.9.*3\.10"):
        DeepSpeechEngine("ds", model_file, settings, tmp_path)


def test_through_the_recognizer_bare_words_get_casing(stt_package: ModuleType, model_file: Path, tmp_path: Path) -> None:
    settings = replace(
        load_settings(None, environ={}), data_dir=tmp_path, default_model="ds",
        models={"ds": ModelSettings(engine="deepspeech", source=str(model_file))},
    )
    registry = ModelRegistry(settings, concurrency=1)
    assert registry.installed == {"ds"}
    wav = _wav_bytes(bursts([0.5, 0.9, 1.3, 1.7, 3.0, 3.4, 3.8, 4.2], 5.0))
    transcript = Recognizer(settings, registry).recognize(wav, None, RecognitionOptions())
    registry.close()
    assert transcript.text == "Please leave your message. After the tone goodbye."


def _wav_bytes(samples: np.ndarray) -> bytes:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes((samples * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


# -- the real packages, on the old Pythons that have them ---------------------------------------

REAL = [("3.9", "deepspeech"), ("3.10", "stt")]
REAL_CHECK = """
from pathlib import Path
from callpipe_asr.engines.deepspeech import DeepSpeechEngine, load_package
from callpipe_asr.errors import EngineError
from callpipe_asr.settings import ModelSettings
print("package", load_package().__name__)
settings = ModelSettings(engine="deepspeech", source="x")
for name in ("absent.pbmm", "broken.pbmm"):
    try:
        DeepSpeechEngine("ds", Path(name), settings, Path("."))
    except EngineError as exc:
        print("error", exc)
"""


def _interpreter(version: str, package: str) -> str | None:
    for python in sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python")):
        probe = subprocess.run([python, "-c", f"import {package}, numpy, yaml"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return python
    return None


@pytest.mark.parametrize(("version", "package"), REAL, ids=[p for _, p in REAL])
def test_start_up_errors_against_the_real_package(version: str, package: str, tmp_path: Path) -> None:
    python = _interpreter(version, package)
    if python is None:
        pytest.skip(f"no Python {version} with {package}, numpy and pyyaml under /root/.pyenv/versions "
                    f"(pip install '{package}' 'numpy<2' pyyaml there to run this)")
    (tmp_path / "broken.pbmm").write_bytes(b"not a model")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([python, "-c", REAL_CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"package {package}"
    assert "no DeepSpeech model file at absent.pbmm" in lines[1]
    assert f"{package} could not load broken.pbmm: CreateModel failed" in lines[2]
