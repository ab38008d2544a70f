"""The command line: ``callpipe-asr serve`` and ``callpipe-asr transcribe FILE...``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__, formats
from .errors import CallpipeError
from .settings import ConfigError, Settings, load_settings
from .transcript import ChannelMode, RecognitionOptions

log = logging.getLogger("callpipe_asr")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"callpipe-asr: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings)
    return _transcribe(settings, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callpipe-asr", description="Self-hosted speech-to-text for telephony.")
    parser.add_argument("--version", action="version", version=f"callpipe-asr {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML settings file (env CALLPIPE_ASR_CONFIG)")
    common.add_argument("--data-dir", type=Path, help="job database and model caches (env CALLPIPE_ASR_DATA_DIR; default ./data)")
    common.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", parents=[common], help="run the HTTP server, job store and workers")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8000)")
    transcribe = commands.add_parser("transcribe", parents=[common], help="print the transcripts of audio files, no server")
    transcribe.add_argument("files", nargs="+", type=Path, metavar="FILE")
    transcribe.add_argument("--language", help="ISO 639-1 code, e.g. en")
    transcribe.add_argument("--model", help="a model name from the config (default: default_model)")
    transcribe.add_argument("--channels", choices=[m.value for m in ChannelMode], default=ChannelMode.AUTO.value)
    transcribe.add_argument("--format", choices=["text", "json", "srt", "vtt"], default="text")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data_dir": args.data_dir,
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
    }


def _serve(settings: Settings) -> int:
    from aiohttp import web

    from .web.app import create_app

    log.info("callpipe-asr %s listening on http://%s:%d/ (data in %s)", __version__, settings.server.host,
             settings.server.port, settings.data_dir.resolve())
    web.run_app(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        print=None,
        access_log_format='%a "%r" %s %b %Tf',
    )
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
