"""Fuzz targets: the audio entry and every dialect's pure request parsers, fed arbitrary bytes.

The contract each target checks: whatever a client sends, the code under test returns or raises
a :class:`CallpipeError` (which the web layer answers with a 4xx). Any other exception, a crash
of the process (FFmpeg is native code) or a hang is a finding.

Run one target with atheris (libFuzzer flags after the name)::

    python tests/fuzz/fuzz_targets.py google WORK_CORPUS tests/fuzz/corpus/google -max_total_time=20

``tests/fuzz/test_fuzz.py`` does that for every target within a time budget, and replays the
committed corpus in-process. Inputs are shaped so that a readable seed mutates sensibly: query
and form targets read ``name=value&...`` (percent-escapes allowed), JSON targets read the body.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Callable
from urllib.parse import parse_qsl

from callpipe_asr.errors import CallpipeError

Target = Callable[[bytes], None]

AUDIO_LIMITS_SECONDS = 60.0
"""Short enough that no input can make a target decode for long or hold much memory."""
AUDIO_LIMITS_CHANNELS = 8
TOKEN_SECRET = b"fuzzing-secret"
FIXED_NOW = 1_700_000_000.0


def _text(data: bytes) -> str:
    """As aiohttp hands text to handlers: UTF-8, undecodable bytes replaced."""
    return data.decode("utf-8", errors="replace")


def _pairs(data: bytes) -> list[tuple[str, str]]:
    return parse_qsl(_text(data), keep_blank_values=True)


def _single(data: bytes) -> dict[str, str]:
    """A query as ``request.query`` maps it: the last value of each name."""
    return dict(_pairs(data))


def _multi(data: bytes) -> dict[str, list[str]]:
    """Form fields with every value of each name, as :class:`UploadForm.values` holds them."""
    fields: dict[str, list[str]] = {}
    for name, value in _pairs(data):
        fields.setdefault(name, []).append(value)
    return fields


def _answered(call: Callable[[], object]) -> None:
    """Run one parser call where a target makes several: its :class:`CallpipeError` is its answer
    to bad input, and must not hide what the next call does."""
    try:
        call()
    except CallpipeError:
        pass


def _split(data: bytes, pieces: int) -> list[bytes]:
    """``pieces`` newline-separated parts (the last keeps the rest), padded with empty ones."""
    parts = data.split(b"\n", pieces - 1)
    return parts + [b""] * (pieces - len(parts))


# -- targets ----------------------------------------------------------------------------------


def audio_probe(data: bytes) -> None:
    """What every upload meets first: the sniffer and the probe, with or without raw hints."""
    from callpipe_asr.audio.decode import AudioLimits, probe_audio, sniff_raw_format
    from callpipe_asr.transcript import AudioHints

    sniff_raw_format(data)
    choice, audio = (data[0] % 8, data[1:]) if data else (0, data)
    encodings = (None, None, "s16le", "mulaw", "alaw", "f32le", "u8", "s16be")
    hints = AudioHints(encoding=encodings[choice], sample_rate_hz=8000, channels=1 + choice % 2) if encodings[choice] else None
    probe_audio(audio, hints, AudioLimits(AUDIO_LIMITS_SECONDS, AUDIO_LIMITS_CHANNELS))


def audio_decode(data: bytes) -> None:
    """What a worker runs: the full decode, resampling and channel choice."""
    from callpipe_asr.audio.decode import AudioLimits, decode_audio
    from callpipe_asr.transcript import ChannelMode

    mode = (ChannelMode.AUTO, ChannelMode.MIX, ChannelMode.SEPARATE)[len(data) % 3]
    decode_audio(data, None, AudioLimits(AUDIO_LIMITS_SECONDS, AUDIO_LIMITS_CHANNELS), mode)


def native(data: bytes) -> None:
    from callpipe_asr.providers import native as dialect

    fields = _single(data)
    _answered(lambda: dialect.options_from_fields(fields))
    dialect.wait_seconds_from_fields(fields, 900.0)


def fusionpbx(data: bytes) -> None:
    from callpipe_asr.providers import fusionpbx as dialect

    query, form = _split(data, 2)
    fields = _multi(form)
    _answered(lambda: dialect.reply_format(_single(query).get("format"), (fields.get("response_format") or [None])[-1], False))
    dialect.options_from_fields(fields, dialect.ReplyFormat.TEXT)


def openai(data: bytes) -> None:
    from callpipe_asr.providers import openai as dialect
    from callpipe_asr.transcript import Task

    task = Task.TRANSLATE if data[:1] == b"T" else Task.TRANSCRIBE
    dialect.parse_request(_multi(data), task)


def watson(data: bytes) -> None:
    """Content-Type line, query line, then the audio (its byte order is sniffed for audio/l16)."""
    from callpipe_asr.providers import watson as dialect

    content_type, query, audio = _split(data, 3)
    dialect.parse_recognize(_single(query), _text(content_type), audio, asynchronous=len(audio) % 2 == 1)


def deepgram(data: bytes) -> None:
    """Query line, then a ``{"url": ...}`` body."""
    from callpipe_asr.providers import deepgram as dialect

    query, body = _split(data, 2)
    _answered(lambda: dialect.parse_listen(_pairs(query)))
    dialect.parse_url_body(body)


def google(data: bytes) -> None:
    """A ``speech:recognize`` JSON body, then the hints its audio would get."""
    from callpipe_asr.providers import google as dialect

    request = dialect.parse_request(data)
    request.hints_for(request.content or b"")


def azure(data: bytes) -> None:
    """Query line, then a bearer token."""
    from callpipe_asr.providers import azure as dialect

    query, token = _split(data, 2)
    _answered(lambda: dialect.parse_query(_single(query)))
    dialect.token_owner(TOKEN_SECRET, _text(token), FIXED_NOW)


def assemblyai(data: bytes) -> None:
    """List query line, ``chars_per_caption`` line, then a ``POST /v2/transcript`` JSON body."""
    from callpipe_asr.providers import assemblyai as dialect

    query, caption, body = _split(data, 3)
    _answered(lambda: dialect.parse_list_query(_single(query)))
    _answered(lambda: dialect.parse_chars_per_caption(_text(caption)))
    request = dialect.parse_transcript_request(body)
    dialect.upload_token(request.render.audio_url)


MODULES: dict[str, str] = {
    "audio_probe": "callpipe_asr.audio.decode",
    "audio_decode": "callpipe_asr.audio.decode",
    "native": "callpipe_asr.providers.native",
    "fusionpbx": "callpipe_asr.providers.fusionpbx",
    "openai": "callpipe_asr.providers.openai",
    "watson": "callpipe_asr.providers.watson",
    "deepgram": "callpipe_asr.providers.deepgram",
    "google": "callpipe_asr.providers.google",
    "azure": "callpipe_asr.providers.azure",
    "assemblyai": "callpipe_asr.providers.assemblyai",
}
"""The module each target exercises: the one instrumented for coverage (instrumenting the whole
package costs seconds of every short run)."""

TARGETS: dict[str, Target] = {
    "audio_probe": audio_probe,
    "audio_decode": audio_decode,
    "native": native,
    "fusionpbx": fusionpbx,
    "openai": openai,
    "watson": watson,
    "deepgram": deepgram,
    "google": google,
    "azure": azure,
    "assemblyai": assemblyai,
}


def checked(target: Target) -> Target:
    """``target`` with the contract applied: a :class:`CallpipeError` is an answer, not a finding."""

    def run(data: bytes) -> None:
        try:
            target(data)
        except CallpipeError:
            pass

    return run


def main(argv: list[str]) -> None:
    import atheris

    name, libfuzzer_args = argv[1], argv[2:]
    module = MODULES[name]
    for dependency in ("callpipe_asr.jobs", "callpipe_asr.engines", "callpipe_asr.integrations.callbacks"):
        importlib.import_module(dependency)  # plainly: only the module under test is instrumented
    sys.modules.pop(module, None)
    with atheris.instrument_imports(include=[module]):
        importlib.import_module(module)
    print(f"fuzzing {name} from {time.strftime('%H:%M:%S')}", flush=True)
    atheris.Setup([argv[0], *libfuzzer_args], checked(TARGETS[name]))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
