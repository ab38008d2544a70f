"""The command line: ``callpipe-asr serve [--role api]``, ``worker``, ``migrate`` and
``transcribe FILE...``; ``jobs list|show|retry|cancel|purge`` and ``backup DEST`` for the
administrator."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__, formats, logs
from .errors import CallpipeError
from .settings import ConfigError, Settings, load_settings
from .transcript import ChannelMode, RecognitionOptions

log = logging.getLogger("callpipe_asr")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Services log to stdout (journald); commands that print results keep their logs on stderr.
    stream = sys.stdout if args.command in ("serve", "worker") else sys.stderr
    logs.configure(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"), stream)
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"callpipe-asr: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return _serve(settings, args.role)
        if args.command == "worker":
            return _worker(settings)
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "jobs":
            return _jobs(settings, args)
        if args.command == "backup":
            return _backup(settings, args.destination)
    except (ConfigError, CallpipeError) as exc:
        print(f"callpipe-asr: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return _transcribe(settings, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callpipe-asr", description="Self-hosted speech-to-text for telephony.")
    parser.add_argument("--version", action="version", version=f"callpipe-asr {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML settings file (env CALLPIPE_ASR_CONFIG)")
    common.add_argument("--data-dir", type=Path, help="job database and model caches (env CALLPIPE_ASR_DATA_DIR; default ./data)")
    common.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    common.add_argument(
        "--log-format", default="text", choices=list(logs.FORMATS),
        help="text for people; json: one object per line with request_id and job_id (journald, Loki...)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", parents=[common], help="run the HTTP server, job store and workers")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8000)")
    serve.add_argument(
        "--role", choices=["all", "api"], default="all",
        help="all: accept and run jobs (one machine); api: accept jobs that `callpipe-asr worker` processes run (PostgreSQL)",
    )
    worker = commands.add_parser("worker", parents=[common], help="claim and run jobs from PostgreSQL, no HTTP server")
    worker.add_argument("--models", help="comma-separated model names to take jobs for (default: jobs.serve_models, else all)")
    commands.add_parser("migrate", parents=[common], help="upgrade the job store's schema and exit")
    transcribe = commands.add_parser("transcribe", parents=[common], help="print the transcripts of audio files, no server")
    transcribe.add_argument("files", nargs="+", type=Path, metavar="FILE")
    transcribe.add_argument("--language", help="ISO 639-1 code, e.g. en")
    transcribe.add_argument("--model", help="a model name from the config (default: default_model)")
    transcribe.add_argument("--channels", choices=[m.value for m in ChannelMode], default=ChannelMode.AUTO.value)
    transcribe.add_argument("--format", choices=["text", "json", "srt", "vtt"], default="text")
    from .jobs import admin

    jobs = commands.add_parser("jobs", help="list, show, retry, cancel or purge jobs (server running or not)")
    admin.add_arguments(jobs, common)
    backup = commands.add_parser("backup", parents=[common], help="copy the job database while the server runs")
    backup.add_argument("destination", type=Path, metavar="DEST", help="a file, or a directory for a timestamped file")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data_dir": args.data_dir,
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "jobs.serve_models": getattr(args, "models", None),
    }


def _serve(settings: Settings, role: str) -> int:
    from . import server
    from .web.app import create_app

    if role == "api" and not settings.uses_shared_store:
        raise ConfigError("--role api needs jobs.store: postgresql://... (with SQLite, no other process runs the jobs)")
    if role == "all":
        _check_models(settings)
    log.info("callpipe-asr %s starting on %s:%d (role %s, jobs in %s)", __version__, settings.server.host,
             settings.server.port, role, _store_description(settings))
    return server.run(settings, create_app(settings, run_workers=role == "all"))


def _worker(settings: Settings) -> int:
    from .jobs import worker_process

    _check_models(settings)
    log.info("callpipe-asr %s worker (jobs in %s)", __version__, _store_description(settings))
    return worker_process.run(settings)


def _check_models(settings: Settings) -> None:
    """Stop at start-up, with every reason, where a model cannot run here: a model that loads at
    start-up is not installed, or a model asks for a CUDA device that is unusable."""
    from .engines import check_models
    from .errors import EngineError

    problems = check_models(settings)
    if problems:
        raise EngineError("cannot start: " + "; ".join(problems))


def _migrate(settings: Settings) -> int:
    from .jobs.store import migrate_store

    version = asyncio.run(migrate_store(settings))
    print(f"job store {_store_description(settings)}: schema version {version}")
    return 0


def _store_description(settings: Settings) -> str:
    """Where the jobs are, without a password."""
    if settings.uses_shared_store:
        from .jobs.postgres_store import describe_dsn

        return describe_dsn(settings.jobs.store)
    return str(settings.database_path.resolve())


def _jobs(settings: Settings, args: argparse.Namespace) -> int:
    from .jobs import admin

    try:
        return asyncio.run(admin.run(settings, args, sys.stdout))
    except admin.AdminError as exc:
        print(f"callpipe-asr: {exc}", file=sys.stderr)
        return 1


def _backup(settings: Settings, destination: Path) -> int:
    from .jobs.backup import BackupError, backup_database

    if settings.uses_shared_store:
        print("callpipe-asr: jobs live in PostgreSQL; back them up with pg_dump", file=sys.stderr)
        return 2
    try:
        result = backup_database(settings.database_path, destination)
    except BackupError as exc:
        print(f"callpipe-asr: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {result.jobs} job(s) to {result.path} ({result.bytes} bytes, {result.seconds:.1f} s)")
    return 0


def _transcribe(settings: Settings, args: argparse.Namespace) -> int:
    from .engines import ModelRegistry
    from .pipeline import Recognizer

    registry = ModelRegistry(settings, concurrency=1)
    recognizer = Recognizer(settings, registry)
    options = RecognitionOptions(model=args.model, language=args.language, channel_mode=ChannelMode(args.channels))
    status = 0
    try:
        for path in args.files:
            try:
                transcript = recognizer.recognize(path.read_bytes(), None, options, job_id=path.name)
            except OSError as exc:
                print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
                status = 1
                continue
            except CallpipeError as exc:
                print(f"{path}: {exc.message}", file=sys.stderr)
                status = 1
                continue
            if args.format == "json":
                print(json.dumps({"file": str(path), **transcript.to_dict()}, ensure_ascii=False))
            elif args.format == "srt":
                print(formats.to_srt(transcript))
            elif args.format == "vtt":
                print(formats.to_vtt(transcript))
            else:
                prefix = f"{path}: " if len(args.files) > 1 else ""
                print(prefix + transcript.text)
    finally:
        registry.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
