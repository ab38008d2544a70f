"""``bench/RESULTS.md``: the figures of one run, with the machine, versions and settings they
were measured with, and the raw numbers as JSON."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from callpipe_asr.scoring import NO_ERRORS

from .audio import CODECS
from .evaluate import Totals, run_totals
from .speed import CONCURRENCIES, Baseline, latency_by_size, median

if TYPE_CHECKING:
    from .run import Results

BEGIN = "<!-- bench: begin (./scripts/bench writes this section) -->"
END = "<!-- bench: end -->"
TELEPHONE_CODECS = ("mulaw", "alaw", "gsm")
SPEECH_KINDS = ("prompt", "voicemail", "long")
TARGET_TELEPHONE_RATIO = 1.5
TARGET_SERVER_RATIO = 0.95
TARGET_HEADLINE = 2.0
TARGET_RSS_MIB = 450.0
TARGET_READY_S = 5.0


def render(results: Results, command: str) -> str:
    sections = [
        _header(results, command),
        _summary(results),
        _accuracy(results),
        _failures(results),
        _nonspeech(results),
        _composites(results),
        _fidelity(results),
        _server(results),
        _headline(results),
        _sweep(results),
        _batching(results),
        _runtime(results),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` into ``path`` between this benchmark's markers. Sections other tools keep
    there between their own markers (``bench/scale_out.py``'s "Scale-out") are left alone; a
    file with none is ours alone and is replaced."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        before, _, rest = text.partition(BEGIN)
        _, _, after = rest.partition(END)
        text = before + block.rstrip("\n") + after
    elif "<!--" in text:  # others' sections only, perhaps under a bare title: ours goes first, as the title
        others = text.partition("\n")[2] if text.startswith("# ") else text
        text = block + "\n" + others.lstrip("\n")
    else:
        text = block
    path.write_text(text)


def raw(results: Results) -> dict[str, Any]:
    """The figures as plain data (transcripts left out) for whoever wants to compare runs."""
    data: dict[str, Any] = {"mode": results.mode, "machine": dataclasses.asdict(results.machine),
                            "settings": dataclasses.asdict(results.settings), "part_seconds": results.part_seconds,
                            "skipped": results.skipped, "load_end": results.load_end}
    if results.accuracy:
        data["wer"] = {f"{kind}/{codec}": _totals_dict(t) for (kind, codec), t in _by_kind_codec(results).items()}
        data["nonspeech"] = {codec: _totals_dict(t) for codec, t in results.accuracy.nonspeech.items()}
        data["invented"] = [dataclasses.asdict(i) for i in results.accuracy.invented]
        data["composites"] = results.accuracy.sentences
    data["fidelity"] = [{"codec": f.codec, "ours": _totals_dict(f.ours), "faster_whisper_decode": _totals_dict(f.faster_whisper_decode),
                         "differing": [list(item) for item in f.differing]}
                        for f in results.fidelity]
    if results.server:
        server = results.server
        data["server"] = {
            "ready_seconds": server.ready_seconds,
            "memory_idle": dataclasses.asdict(server.memory_idle) if server.memory_idle else None,
            "memory_end": dataclasses.asdict(server.memory_end) if server.memory_end else None,
            "runs": {c: {"server": _run_dict(server.server_runs[c]), "direct": _run_dict(server.direct_runs[c])}
                     for c in server.server_runs},
            "voicemail": _run_dict(server.voicemail_run) if server.voicemail_run else None,
            "full_queue": _run_dict(server.full_queue_run) if server.full_queue_run else None,
        }
    data["baselines"] = [{"label": b.label, "run": _run_dict(b.run), "wer": _totals_dict(b.totals)} for b in _baselines(results)]
    data["sweep"] = [{"label": r.label, "run": _run_dict(r.run), "wer": _totals_dict(r.totals), "nonspeech_words": r.nonspeech_words,
                      "alone": _run_dict(r.latency_run) if r.latency_run else None} for r in results.sweep]
    if results.batching:
        data["batching"] = {"ours": _run_dict(results.batching.ours), "batched": [{"batch_size": size, "run": _run_dict(run), "wer": _totals_dict(t)}
                                        for size, run, t in results.batching.batched],
                            "encoder_ms_per_window": results.batching.encoder_ms_per_window}
    return data


def _totals_dict(totals: Totals) -> dict[str, Any]:
    return {**dataclasses.asdict(totals), "wer": totals.wer}


def _run_dict(run: Any) -> dict[str, Any]:
    return {"label": run.label, "concurrency": run.concurrency, "wall": run.wall, "cpu_seconds": run.cpu_seconds,
            "audio_seconds": run.audio_seconds,
            "throughput": run.throughput, "latency_by_size": latency_by_size(run)}


# --- sections -------------------------------------------------------------------------------


def _header(results: Results, command: str) -> str:
    machine = results.machine
    model = results.settings.model()
    versions = ", ".join(f"{name} {version}" for name, version in machine.versions.items())
    settings = ", ".join(f"{f.name}={getattr(model, f.name)!r}" for f in dataclasses.fields(model))
    waited = ""
    if machine.waited_for_quiet:
        seconds, load = machine.waited_for_quiet
        waited = f" (waited {seconds:.0f} s for a quiet machine; 1-minute load then {load})"
    corpus = ""
    if results.corpus:
        counts: dict[str, tuple[int, float]] = {}
        for recording in results.corpus.recordings:
            number, seconds = counts.get(recording.kind, (0, 0.0))
            counts[recording.kind] = (number + 1, seconds + recording.duration)
        corpus = "; ".join(f"{kind}: {n} recordings, {s / 60:.1f} min" for kind, (n, s) in counts.items())
    lines = [
        "# callpipe-asr benchmark results",
        "",
        f"Run `{command}` ({results.mode} mode) started {machine.started_at}. Every figure below comes from this one "
        "run on this one machine; compare ratios, not absolute times, across machines.",
        "",
        f"- **Machine**: {machine.cpus} CPUs ({machine.cpu_model}), {machine.memory_gib} GiB RAM, no GPU used",
        f"- **Load average at start**: {' / '.join(map(str, machine.load_start))} (1 / 5 / 15 min){waited}; "
        f"at the end: {' / '.join(map(str, results.load_end or ()))}",
        f"- **Versions**: Python {machine.python}, {versions}",
        f"- **Model settings** (the shipped defaults): {settings}; jobs.workers={results.settings.jobs.workers}",
        f"- **Corpus** (built from Debian's asterisk-core-sounds-en-wav, asterisk-core-sounds-en, asterisk-moh-opsound-wav): {corpus}",
        "- **Word error rate**: (substitutions + deletions + insertions) / reference words over the whole set, after "
        "`callpipe_asr.scoring.normalize_text` on both sides (lower case, punctuation dropped, English contractions "
        "written out, digits and `*`/`#` read as spoken).",
    ]
    if machine.installed_now:
        lines.append(f"- Installed by this run: {', '.join(machine.installed_now)}")
    return "\n".join(lines)


def _summary(results: Results) -> str:
    rows: list[tuple[str, str, str, str]] = []
    by_codec = _by_codec(results)
    if by_codec:
        pcm = by_codec.get("pcm-8k")
        prompt_pcm = _by_kind_codec(results).get(("prompt", "pcm-8k"))
        composite_pcm = _combine(t for (k, c), t in _by_kind_codec(results).items() if c == "pcm-8k" and k != "prompt")
        rows.append(("WER, single prompts, PCM 8 kHz", _wer(prompt_pcm), "reference ≈ 0.07-0.08", ""))
        rows.append(("WER, voicemail composites, PCM 8 kHz", _wer(composite_pcm), "≤ single prompts",
                     _ok(composite_pcm.wer is not None and prompt_pcm is not None and prompt_pcm.wer is not None
                         and composite_pcm.wer <= prompt_pcm.wer)))
        worst = max((by_codec[c].wer or 0.0) / (pcm.wer or 1e-9) for c in TELEPHONE_CODECS if c in by_codec) if pcm else None
        rows.append(("Worst of μ-law / A-law / GSM WER ÷ PCM WER", _num(worst, 2), f"≤ {TARGET_TELEPHONE_RATIO}",
                     _ok(worst is not None and worst <= TARGET_TELEPHONE_RATIO)))
    if results.accuracy:
        nonspeech = _combine(results.accuracy.nonspeech.values())
        rows.append(("Words emitted on non-speech", f"{nonspeech.words_emitted} over {nonspeech.recordings} recordings",
                     "0", _ok(nonspeech.words_emitted == 0)))
        composites = results.accuracy.sentences
        present = sum(s[3] for s in composites)
        total_sentences = sum(s[2] for s in composites)
        after = sum(s[4] for s in composites)
        rows.append(("Sentences kept in composites", f"{present} / {total_sentences}", "all", _ok(present == total_sentences)))
        rows.append(("Words written after the speech ended", str(after), "0", _ok(after == 0)))
    if results.fidelity:
        # every codec measured together: one codec alone turns on a word or two either way
        ours = sum((f.ours.errors for f in results.fidelity), NO_ERRORS)
        theirs = sum((f.faster_whisper_decode.errors for f in results.fidelity), NO_ERRORS)
        codecs = ", ".join(f.codec for f in results.fidelity)
        rows.append((f"WER, our decoder vs faster-whisper's decode_audio ({codecs} together)",
                     f"{ours.rate:.3f} vs {theirs.rate:.3f} ({ours.errors} vs {theirs.errors} errors)", "no worse",
                     _ok(ours.errors <= theirs.errors)))
    server = results.server
    if server and server.server_runs:
        ratios = [server.server_runs[c].throughput / server.direct_runs[c].throughput for c in server.server_runs]
        rows.append(("Server ÷ direct throughput at 1 / 2 / 8 clients", " / ".join(f"{r:.2f}" for r in ratios),
                     f"≥ {TARGET_SERVER_RATIO}", _ok(min(ratios) >= TARGET_SERVER_RATIO)))
        best = max(server.server_runs.values(), key=lambda run: run.throughput)
        rows.append(("Server throughput (audio s per wall s), best concurrency",
                     f"{best.throughput:.1f} at {best.concurrency} clients (RTF {best.rtf:.3f})", "", ""))
    headline = _headline_ratio(results)
    if headline is not None:
        speedup, ours, theirs = headline
        rows.append(("Voicemail through the server vs faster-whisper defaults (beam 5, no VAD)",
                     f"{speedup:.2f}x faster; WER {_wer(ours)} vs {_wer(theirs)}", f"≥ {TARGET_HEADLINE}x, WER no worse",
                     _ok(speedup >= TARGET_HEADLINE and (ours.wer or 0) <= (theirs.wer or 0) + 1e-9)))
    if server and server.memory_end:
        rows.append(("Peak RSS of the server (VmHWM), whole run, queue filled", f"{server.memory_end.peak_mib:.0f} MiB",
                     f"≤ {TARGET_RSS_MIB:.0f} MiB", _ok(server.memory_end.peak_mib <= TARGET_RSS_MIB)))
    if server and server.ready_seconds:
        ready = median(server.ready_seconds)
        rows.append(("Start to ready (/readyz 200), median of starts", f"{ready:.2f} s "
                     f"({min(server.ready_seconds):.2f}-{max(server.ready_seconds):.2f}, {len(server.ready_seconds)} starts)",
                     f"≤ {TARGET_READY_S:.0f} s", _ok(ready <= TARGET_READY_S)))
    table = _table(("figure", "this run", "target", "met"), rows)
    return "## Summary\n\n" + table


def _accuracy(results: Results) -> str:
    by_kind_codec = _by_kind_codec(results)
    if not by_kind_codec:
        return ""
    codecs = [c for c in CODECS if any(c == codec for _, codec in by_kind_codec)]
    rows = []
    for codec in codecs:
        cells = [by_kind_codec.get((kind, codec)) for kind in SPEECH_KINDS]
        combined = _combine(t for t in cells if t is not None)
        rows.append((codec, *(_wer_words(t) for t in cells), _wer(combined)))
    pcm = _by_codec(results).get("pcm-8k")
    text = ["## Word error rate by codec and container",
            "",
            "Each cell: WER (reference words). The same recordings in every row; PCM 8 kHz is the master the "
            "others were encoded from (μ-law, A-law and GSM \"wav49\" by SoX; MP3, Opus and FLAC by FFmpeg through "
            "PyAV; 48 kHz stereo by SoX's resampler, the channels identical).",
            "",
            _table(("codec", "single prompts", "voicemails (20-60 s)", "long voicemails (2-5 min)", "all"), rows)]
    if pcm and pcm.wer:
        ratios = ", ".join(f"{c} {(_by_codec(results)[c].wer or 0) / pcm.wer:.2f}x" for c in TELEPHONE_CODECS
                           if c in _by_codec(results))
        text += ["", f"Telephone codecs against PCM (all speech): {ratios} (target ≤ {TARGET_TELEPHONE_RATIO}x)."]
        if results.accuracy and results.accuracy.failures:
            decoded = {c: results.accuracy.totals(SPEECH_KINDS, c, decoded_only=True) for c in TELEPHONE_CODECS}
            pcm_decoded = results.accuracy.totals(SPEECH_KINDS, "pcm-8k", decoded_only=True)
            if pcm_decoded.wer:
                parts = ", ".join(f"{c} {(t.wer or 0) / pcm_decoded.wer:.2f}x ({t.recordings} files)"
                                  for c, t in decoded.items() if t.recordings)
                text += [f"Over the files that decoded (see the failures below): {parts}."]
    return "\n".join(text)


def _failures(results: Results) -> str:
    failures = list(results.accuracy.failures) if results.accuracy else []
    for run in _all_runs(results):
        failures += [(o.request.recording.id, o.request.codec, f"{run.label}: {o.error}") for o in run.failures]
    if not failures:
        return ""
    rows = [(recording, codec, error) for recording, codec, error in failures]
    return "\n".join([
        "## Files that could not be recognised",
        "",
        "Each is scored as an empty transcript above (all its reference words count as deletions).",
        "",
        _table(("recording", "codec", "error"), rows),
    ])


def _all_runs(results: Results) -> list[Any]:
    runs: list[Any] = []
    if results.server:
        runs += list(results.server.server_runs.values()) + list(results.server.direct_runs.values())
        runs += [r for r in (results.server.voicemail_run, results.server.full_queue_run) if r]
    runs += [b.run for b in _baselines(results)] + [row.run for row in results.sweep]
    return runs


def _nonspeech(results: Results) -> str:
    if not results.accuracy or not results.accuracy.nonspeech:
        return ""
    rows = [(codec, str(t.recordings), str(t.words_emitted)) for codec, t in sorted(results.accuracy.nonspeech.items())]
    text = ["## Words emitted on non-speech (target 0)",
            "",
            "Silence, line noise (quiet and loud, with mains hum), dial tone, ringback, busy, SIT, a 1004 Hz test tone, "
            "fax CNG, DTMF, Asterisk's recorded beeps and sounds, music on hold (30 s excerpts and whole tracks).",
            "",
            _table(("codec", "recordings", "words emitted"), rows)]
    for item in results.accuracy.invented:
        text.append(f"- {item.recording} ({item.codec}): {item.words} words: {item.text!r}")
    margin = results.vad_margin
    if margin:
        text += ["", f"The VAD's margin (`vad_threshold` {margin.threshold}): the highest speech probability it gives any "
                     f"32 ms frame of non-speech is {margin.nonspeech_max:.3f} ({margin.nonspeech_worst}); the weakest "
                     f"single prompt peaks at {margin.prompt_peak_min:.3f} ({margin.prompt_weakest}). A region also needs "
                     "`vad_min_speech_ms` of frames above the threshold."]
    if results.baseline_nonspeech:
        count, words, invented = results.baseline_nonspeech
        names = ", ".join(f"{i.recording} ({i.words})" for i in invented)
        text += ["", f"For contrast, faster-whisper with its defaults (no VAD, no filters) on {count} of these "
                     f"(PCM): {words} words{': ' + names if names else ''}."]
    return "\n".join(text)


def _composites(results: Results) -> str:
    if not results.accuracy or not results.accuracy.sentences:
        return ""
    rows = []
    by_recording: dict[str, list[tuple[str, int, int, int]]] = {}
    for recording, codec, sentences, present, after in results.accuracy.sentences:
        by_recording.setdefault(recording, []).append((codec, sentences, present, after))
    for recording, entries in by_recording.items():
        count = entries[0][1]
        missing = [f"{codec} ({count - present})" for codec, _, present, _ in entries if present < count]
        late = [f"{codec} ({words})" for codec, _, _, words in entries if words]
        rows.append((recording, str(count), ", ".join(missing) or "none", ", ".join(late) or "none"))
    return "\n".join([
        "## Composites: every sentence kept, nothing after the speech",
        "",
        "A sentence is kept when at least half its words are heard within 1.5 s of where the reference puts it (this "
        "checks VAD cropping and the mapping of times back onto the recording); words starting more than 1 s after "
        "the last sentence are invented (the tails are 15 s of silence, 15 s of music on hold, or 10 s of line "
        "noise). Every scored codec variant counted.",
        "",
        _table(("recording", "sentences", "codecs that lost any (how many)", "codecs with words after the speech"), rows),
    ])


def _fidelity(results: Results) -> str:
    if not results.fidelity:
        return ""
    rows = [(f.codec, _wer_words(f.ours), _wer_words(f.faster_whisper_decode), str(len(f.differing)))
            for f in results.fidelity]
    differences = [f"- {f.codec}, {name}: ours \"{ours}\"; theirs \"{theirs}\""
                   for f in results.fidelity for name, ours, theirs in f.differing]
    return "\n".join([
        "## Decoding fidelity",
        "",
        "The same engine, filters and files (prompts, voicemails and long voicemails); only the decoding differs: our "
        "PyAV decoder and resampler (float samples) against faster-whisper's own `decode_audio` (16-bit samples; what "
        "the engine would use if given the file). Both sides greedy only (`temperatures: [0.0]`): the temperature "
        "fallback samples at random, so two runs of the same audio can differ by a word, which would hide or fake a "
        "difference here.",
        "",
        _table(("codec", "our decoding: WER (words)", "faster-whisper decode_audio: WER (words)",
                "recordings transcribed differently"), rows),
        *(["", "Where the transcripts differ:", "", *differences] if differences else []),
    ])


def _server(results: Results) -> str:
    server = results.server
    if not server or not server.server_runs:
        return ""
    rows = []
    for concurrency in CONCURRENCIES:
        if concurrency not in server.server_runs:
            continue
        ours, direct = server.server_runs[concurrency], server.direct_runs[concurrency]
        rows.append((str(concurrency), f"{ours.audio_seconds:.0f} s / {len(ours.outcomes)}", f"{ours.throughput:.1f}",
                     f"{ours.rtf:.3f}", f"{direct.throughput:.1f}", f"{ours.throughput / direct.throughput:.2f}",
                     _wer(run_totals(ours))))
    latency_rows = []
    for concurrency, run in sorted(server.server_runs.items()):
        for bucket, (count, p50, p95) in latency_by_size(run).items():
            latency_rows.append((str(concurrency), bucket, str(count), f"{p50:.2f}", f"{p95:.2f}"))
    text = [
        "## The server against the pipeline called directly",
        "",
        "A real `callpipe-asr serve` process on 127.0.0.1 (the shipped defaults; only the data directory, port and "
        "`jobs.duplicate_window_seconds: 0` set, so the same files can be sent again), native API with `wait` and "
        "`word_timestamps=false` and `segment_timestamps=false` as the FreeSWITCH voicemail Lua sends them (text "
        "only), one aiohttp client per concurrent request. "
        "\"Direct\" is the same pipeline (decode, VAD, model, filters) with the same settings and options in the "
        "benchmark's process, at most `jobs.workers` recognitions at once as in the server. "
        "Runs interleaved per concurrency; the workload mixes prompts, voicemails and a long voicemail over every "
        "codec, each request distinct.",
        "",
        _table(("clients", "audio / requests", "server audio s per s", "server RTF", "direct audio s per s",
                "server ÷ direct", "WER"), rows),
        "",
        "Latency a client saw (seconds, upload to transcript), by request size:",
        "",
        _table(("clients", "request size", "requests", "p50", "p95"), latency_rows),
    ]
    if server.full_queue_run:
        run = server.full_queue_run
        full = len(run.outcomes) >= results.settings.jobs.max_queued
        text += ["", f"{'Full queue' if full else 'Queue'}: {len(run.outcomes)} short requests sent at once "
                     f"(`jobs.max_queued` = {results.settings.jobs.max_queued}), all answered in {run.wall:.1f} s "
                     f"({run.throughput:.1f} audio s per s)."]
    if server.memory_idle and server.memory_end:
        text += ["", f"Memory of the server process (`/proc/<pid>/status`): {server.memory_idle.rss_kib / 1024:.0f} MiB "
                     f"resident when ready; peak (VmHWM) over the whole run, full queue included: "
                     f"{server.memory_end.peak_mib:.0f} MiB; resident at the end {server.memory_end.rss_kib / 1024:.0f} MiB."]
    if server.ready_seconds:
        text += ["", "Start to ready (spawn to the first 200 from `/readyz`, model loaded): "
                     + ", ".join(f"{s:.2f} s" for s in server.ready_seconds) + "."]
    return "\n".join(text)


def _headline(results: Results) -> str:
    server = results.server
    if not _baselines(results) or not server or not server.voicemail_run:
        return ""
    ours = server.voicemail_run
    rows = [("callpipe-asr server (1 client)", f"{ours.wall:.1f}", f"{ours.rtf:.3f}", _wer_words(run_totals(ours)), "1.00x")]
    for baseline in _baselines(results):
        rows.append((baseline.label, f"{baseline.run.wall:.1f}", f"{baseline.run.rtf:.3f}", _wer_words(baseline.totals),
                     f"{baseline.run.wall / ours.wall:.2f}x"))
    return "\n".join([
        "## Headline: voicemail through the server vs faster-whisper's defaults",
        "",
        f"The voicemails and long voicemails (PCM 8 kHz, {ours.audio_seconds / 60:.1f} min of audio), one at a time, "
        "each file through the server and then through each baseline before the next file (so changes in the "
        "machine's load hit every row alike); wall time is the sum of the requests' latencies. "
        "faster-whisper's defaults: `WhisperModel(path)` (the bundled float16 weights, computed as float32 on the "
        "CPU) and `transcribe(file, language=\"en\")`: beam 5, no VAD, temperature fallback, conditioned on previous "
        "text. The int8 row changes only the weights, to separate what quantisation buys from the rest. Each baseline "
        "runs in a process of its own with the environment the benchmark started with (none of the process settings "
        "our engine makes: OpenMP's short spin before sleeping, glibc's mmap threshold). The server is asked as the "
        "FreeSWITCH voicemail Lua asks (native API, `word_timestamps=false`, `segment_timestamps=false`: the e-mail "
        "carries text only, so Whisper decodes text in windows cut at pauses); its time includes the "
        "upload, queue and HTTP round trip.",
        "",
        _table(("configuration", "wall s", "RTF", "WER (words)", "time ÷ server's"), rows),
    ])


def _sweep(results: Results) -> str:
    if not results.sweep:
        return ""
    rows = []
    for row in results.sweep:
        alone = f"{row.latency_run.throughput:.1f}" if row.latency_run else ""
        cpu = f"{row.run.cpu_seconds / row.run.audio_seconds:.4f}" if row.run.cpu_seconds is not None else ""
        rows.append((row.label, row.note, _wer(row.totals), str(row.nonspeech_words), f"{row.run.throughput:.1f}", alone, cpu))
    requests = results.sweep[0].run.outcomes
    return "\n".join([
        "## Configuration sweep (pipeline called directly)",
        "",
        f"Each row changes one thing from the shipped defaults and runs the same {len(requests)} PCM recordings "
        f"({sum(o.request.seconds for o in requests) / 60:.1f} min: prompts, voicemails, a long voicemail) "
        "with 8 requests offered at once (at most `jobs.workers` running), and, for some rows, one at a time; "
        "then the non-speech recordings up to 30 s long, for the words each configuration invents there. Options as "
        "the voicemail Lua sends them (text only: neither word nor segment times), except where a row changes them. "
        "The OpenMP rows change the process environment, read once when CTranslate2 loads: they run the same pipeline "
        "in a child process started with the benchmark's own environment plus that change (the shipped engine sets "
        "`OMP_WAIT_POLICY=ACTIVE`, `GOMP_SPINCOUNT=1000`).",
        "",
        _table(("configuration", "changes", "WER", "words on non-speech", "audio s per s, 8 offered",
                "audio s per s, 1 at a time", "CPU s per audio s"), rows),
    ])


def _batching(results: Results) -> str:
    batching = results.batching
    if not batching:
        return ""
    rows = [("our pipeline (sequential, word timestamps)", f"{batching.ours.throughput:.1f}", _wer(run_totals(batching.ours)))]
    rows += [(f"BatchedInferencePipeline, batch {size}", f"{run.throughput:.1f}", _wer(totals))
             for size, run, totals in batching.batched]
    encoder = ", ".join(f"batch {size}: {ms:.0f} ms per 30 s window" for size, ms in sorted(batching.encoder_ms_per_window.items()))
    return "\n".join([
        "## Batching",
        "",
        "faster-whisper's `BatchedInferencePipeline` (its own VAD chunking, a recording's 30 s chunks decoded as one "
        "batch, no temperature fallback, word timestamps on) against our pipeline on the same recordings (the long "
        "voicemails and two voicemails, PCM), one at a time:",
        "",
        _table(("pipeline", "audio s per s", "WER"), rows),
        "",
        f"The Whisper encoder alone, same 30 s window repeated: {encoder}. Batching concurrent short requests could at "
        "most save the difference per window; CTranslate2 on 2 CPU cores gains little from larger matrices.",
    ])


def _runtime(results: Results) -> str:
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in results.part_seconds.items())
    lines = ["## Run", "", f"Time per part: {parts}."]
    if results.skipped:
        lines.append(f"Skipped: {'; '.join(results.skipped)}.")
    return "\n".join(lines)


# --- helpers --------------------------------------------------------------------------------


def _baselines(results: Results) -> list[Baseline]:
    return results.server.baselines if results.server else []


def _by_kind_codec(results: Results) -> dict[tuple[str, str], Totals]:
    if not results.accuracy:
        return {}
    return {(kind, codec): results.accuracy.totals([kind], codec) for kind, codec in results.accuracy.scores}


def _by_codec(results: Results) -> dict[str, Totals]:
    codecs = {codec for _, codec in _by_kind_codec(results)}
    return {codec: _combine(t for (k, c), t in _by_kind_codec(results).items() if c == codec) for codec in codecs}


def _combine(totals: Iterable[Totals]) -> Totals:
    items = list(totals)
    errors = NO_ERRORS
    for item in items:
        errors = errors + item.errors
    return Totals(
        recordings=sum(t.recordings for t in items),
        errors=errors,
        words_emitted=sum(t.words_emitted for t in items),
        words_after_speech=sum(t.words_after_speech for t in items),
        sentences=sum(t.sentences for t in items),
        sentences_present=sum(t.sentences_present for t in items),
    )


def _headline_ratio(results: Results) -> tuple[float, Totals, Totals] | None:
    server = results.server
    defaults = next((b for b in _baselines(results) if b.label == "faster-whisper defaults"), None)
    if not server or not server.voicemail_run or defaults is None:
        return None
    return defaults.run.wall / server.voicemail_run.wall, run_totals(server.voicemail_run), defaults.totals


def _wer(totals: Totals | None) -> str:
    return "n/a" if totals is None or totals.wer is None else f"{totals.wer:.3f}"


def _wer_words(totals: Totals | None) -> str:
    if totals is None or totals.wer is None:
        return "n/a"
    return f"{totals.wer:.3f} ({totals.errors.reference_words})"


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ok(condition: bool) -> str:
    return "yes" if condition else "**no**"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)

