"""The DeepSpeech / Coqui STT adapter.

Inference runs against a STAND-IN (``deepspeech_standin.py``) that implements the packages'
documented API: neither package installs on this Python and no DeepSpeech model is on PyPI. The
start-up and error paths also run against the real packages (``deepspeech`` 0.9.3 on Python 3.9,
``stt`` 1.4.0 on 3.10) where pyenv has such a Python: the package is installed from PyPI once into
a virtual environment kept in the pytest cache. Those tests skip, saying why, where there is no
such Python or the package cannot be installed.
"""

from __future__ import annotations

import fcntl
import importlib.machinery
import os
import re
import shutil
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
    monkeypatch.setitem(sys.modules, "deepspeech", None)
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
    monkeypatch.setitem(sys.modules, "stt", None)
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

REAL = [("3.9", "deepspeech", "0.9.3"), ("3.10", "stt", "1.4.0")]
"""(Python, package, version): the last release of each, and the only Python it has wheels for."""
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
INSTALL_TIMEOUT_SECONDS = 300
"""For creating the cached environment and installing into it, once."""
CHECK_TIMEOUT_SECONDS = 120
REAL_CHECK = """
from pathlib import Path
from callpipe_asr.engines.deepspeech import DeepSpeechEngine, load_package
from callpipe_asr.errors import EngineError
from callpipe_asr.settings import ModelSettings
package = load_package()
print("package", package.__name__, package.version(), package.__file__)
settings = ModelSettings(engine="deepspeech", source="x")
for name in ("absent.pbmm", "broken.pbmm", "broken.tflite"):
    try:
        DeepSpeechEngine("ds", Path(name), settings, Path("."))
    except EngineError as exc:
        print("error", exc)
    else:
        print("loaded", name)
"""
"""Run by the old interpreter with the repository on its path: the whole adapter module and the
parts of the package it imports (settings, errors, transcript: numpy and pyyaml) import there."""


def _old_python(version: str) -> Path | None:
    """The newest pyenv CPython ``version``.N (not a -dev or free-threaded build)."""
    release = re.compile(rf"{re.escape(version)}\.\d+")
    found = [p for p in PYENV_VERSIONS.glob(f"{version}.*/bin/python") if release.fullmatch(p.parts[-3])]
    return max(found, key=lambda p: int(p.parts[-3].rsplit(".", 1)[1]), default=None)


def _has(python: Path, package: str) -> bool:
    probe = subprocess.run([str(python), "-c", f"import {package}, numpy, yaml"], capture_output=True, timeout=60)
    return probe.returncode == 0


def _environment_with(python: Path, package: str, version: str, cache: Path) -> tuple[Path | None, str]:
    """A Python with the real ``package`` (and numpy, pyyaml) installed: a virtual environment
    made from ``python`` in ``cache`` once, and reused; else ``python`` itself when it already
    has them. ``(None, why)`` when neither can be had (no PyPI access, for one)."""
    environment = cache / f"{package}-{version}-py{python.parts[-3]}"
    ready = environment / ".installed"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{environment.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest processes at once build it once
        if not ready.exists():
            shutil.rmtree(environment, ignore_errors=True)  # a half-built one from an interrupted run
            try:
                subprocess.run([str(python), "-m", "venv", str(environment)], check=True, capture_output=True,
                               timeout=INSTALL_TIMEOUT_SECONDS)
                subprocess.run([str(environment / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                                "-q", f"{package}=={version}", "numpy<2", "pyyaml"],
                               check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                shutil.rmtree(environment, ignore_errors=True)
                output = exc.stderr if isinstance(exc.stderr, str) else (exc.stderr or b"").decode(errors="replace")
                why = (output.strip().splitlines() or [str(exc)])[-1]
                if _has(python, package):
                    return python, ""
                return None, f"could not install {package}=={version} into a Python {python.parts[-3]} environment: {why}"
            ready.touch()
    return environment / "bin" / "python", ""


@pytest.fixture(scope="session")
def old_python_cache(pytestconfig: pytest.Config) -> Path:
    """Where the old Pythons' environments are kept between runs: the pytest cache (also when
    the cache plugin is off, at the same place)."""
    cache = getattr(pytestconfig, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("callpipe-old-python-environments"))
    return REPO / ".pytest_cache" / "d" / "callpipe-old-python-environments"


@pytest.mark.parametrize(("version", "package", "release"), REAL, ids=[p for _, p, _ in REAL])
def test_start_up_errors_against_the_real_package(
    version: str, package: str, release: str, tmp_path: Path, old_python_cache: Path
) -> None:
    """The real ``deepspeech`` / ``stt``, installed from PyPI once into a cached environment of the
    pyenv Python it has wheels for: no model exists to load, so what runs for real is start-up:
    the package found and imported, a missing model file named by us, and a file that is not a
    model refused by the real native library, its failure passed on in our error."""
    python = _old_python(version)
    if python is None:
        pytest.skip(f"no Python {version} under {PYENV_VERSIONS}: {package} {release} has wheels only for {version}")
    interpreter, why = _environment_with(python, package, release, old_python_cache)
    if interpreter is None:
        pytest.skip(why)
    (tmp_path / "broken.pbmm").write_bytes(b"not a model")
    (tmp_path / "broken.tflite").write_bytes(b"TFL3 not a model either")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([str(interpreter), "-c", REAL_CHECK], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=CHECK_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    _, name, found_version, location = lines[0].split(" ", 3)
    assert (name, found_version) == (package, release)
    assert "site-packages" in location and "deepspeech_standin" not in location
    assert lines[1] == "error model 'ds': no DeepSpeech model file at absent.pbmm (a .pbmm or .tflite)"
    for line, model in zip(lines[2:], ("broken.pbmm", "broken.tflite")):  # the native library's own words and code
        refused = rf"error model 'ds': {package} could not load {model}: CreateModel failed with '.+' \(0x3\d{{3}}\)"
        assert re.fullmatch(refused, line), line
    assert len(lines) == 4, result.stdout
