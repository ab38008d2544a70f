"""Fixtures of the FreeSWITCH Lua tests: the scripts run under real Lua interpreters (Debian
``lua5.3`` and ``lua5.2``) inside ``freeswitch_stub.lua``, the stand-in for FreeSWITCH's host
object, against real callpipe-asr server processes and a real SMTP server (aiosmtpd).

Every ``conftest.py`` outside a package is imported under the one module name ``conftest``, so
the helpers of ``tests/conftest.py`` (WER) and ``tests/providers/conftest.py`` (server
processes) are loaded from their files under private names, as ``tests/web/conftest.py`` does.
"""

from __future__ import annotations

import email
import email.policy
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
LUA_DIR = REPO_DIR / "lua"
SCRIPT = LUA_DIR / "voicemail_transcribe.lua"
STUB = Path(__file__).resolve().parent / "freeswitch_stub.lua"
INTERPRETERS = ("lua5.3", "lua5.2")


def _load(name: str, path: Path) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_root = _load("_callpipe_tests_root_conftest", TESTS_DIR / "conftest.py")
_servers = _load("_callpipe_tests_providers_conftest", TESTS_DIR / "providers" / "conftest.py")
Prompt = _root.Prompt
word_error_rate: Callable[[str, str], float] = _root.word_error_rate
Server = _servers.Server
TEST_KEY: str = _servers.TEST_KEY
free_port: Callable[[], int] = _servers.free_port
launch_server: Callable[[Path, dict[str, Any]], Server] = _servers.launch
stop_server: Callable[[Server], None] = _servers.stop


# -- running Lua ------------------------------------------------------------------------------


@dataclass
class LuaRun:
    """What one script run asked of FreeSWITCH, in order (see freeswitch_stub.lua)."""

    events: list[dict[str, Any]]
    elapsed: float
    returncode: int
    stderr: str

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    def logs(self, *levels: str) -> list[str]:
        return [e["message"] for e in self.of("log") if not levels or e["level"] in levels]

    def log_text(self, *levels: str) -> str:
        return "".join(self.logs(*levels))

    @property
    def sleeps_ms(self) -> list[float]:
        return [float(e["ms"]) for e in self.of("sleep")]

    @property
    def emails(self) -> list[dict[str, Any]]:
        return self.of("email")

    def assert_clean(self) -> None:
        """The script ended normally: no Lua error, no attempt to exit FreeSWITCH."""
        assert self.returncode == 0, self.stderr
        assert not self.of("lua_error"), self.of("lua_error")
        assert self.events and self.events[-1]["type"] == "done", self.stderr
        assert "Surely you jest" not in self.log_text()


RunLua = Callable[..., LuaRun]


@pytest.fixture(params=INTERPRETERS)
def lua(request: pytest.FixtureRequest) -> str:
    """Each Lua test runs under both interpreters FreeSWITCH builds embed."""
    interpreter = str(request.param)
    if shutil.which(interpreter) is None:
        pytest.fail(f"{interpreter} is missing: run ./scripts/setup --test (Debian packages lua5.3 lua5.2 lua-cjson curl)")
    return interpreter


@pytest.fixture
def run_lua(tmp_path: Path) -> RunLua:
    """Run a script under the FreeSWITCH stand-in; keyword arguments are the spec's fields.

    ``conf_dir`` points into tmp_path unless given, so a real /etc/freeswitch/callpipe_asr.conf.lua
    never reaches a test.
    """
    counter = iter(range(1_000_000))

    def run(
        interpreter: str,
        *,
        argv: list[str] | tuple[str, ...] = (),
        variables: dict[str, str] | None = None,
        session: dict[str, Any] | None = None,
        channels: list[str] | tuple[str, ...] = (),
        directory: dict[str, dict[str, str]] | None = None,
        smtp: "SmtpSink | None" = None,
        hide_cjson: bool = False,
        script: Path = SCRIPT,
        cwd: Path | None = None,
        timeout: float = 120,
    ) -> LuaRun:
        number = next(counter)
        globals_ = {"conf_dir": str(tmp_path / "conf")}
        globals_.update(variables or {})
        record = tmp_path / f"run-{number}.jsonl"
        spec = {
            "script": str(script),
            "argv": list(argv),
            "globals": globals_,
            "session": session,
            "channels": list(channels),
            "directory": directory or {},
            "smtp": {"host": smtp.host, "port": smtp.port} if smtp else None,
            "record": str(record),
            "hide_cjson": hide_cjson,
        }
        spec_path = tmp_path / f"run-{number}.json"
        spec_path.write_text(json.dumps(spec))
        started = time.monotonic()
        completed = subprocess.run(
            [interpreter, str(STUB), str(spec_path)],
            cwd=cwd or tmp_path, capture_output=True, timeout=timeout,
            env={**os.environ, "LC_ALL": "C"},
        )
        elapsed = time.monotonic() - started
        events = [json.loads(line) for line in record.read_text(errors="replace").splitlines()] if record.exists() else []
        return LuaRun(events, elapsed, completed.returncode, completed.stderr.decode(errors="replace"))

    return run


# -- a real SMTP server -----------------------------------------------------------------------


@dataclass
class ReceivedMail:
    mail_from: str
    recipients: list[str]
    raw: bytes
    message: EmailMessage

    def part(self, content_type: str) -> EmailMessage:
        parts = [p for p in self.message.walk() if p.get_content_type() == content_type]
        assert len(parts) == 1, [p.get_content_type() for p in self.message.walk()]
        return parts[0]  # type: ignore[return-value]

    @property
    def text(self) -> str:
        return str(self.part("text/plain").get_content()).replace("\r\n", "\n")

    @property
    def html(self) -> str:
        return str(self.part("text/html").get_content()).replace("\r\n", "\n")

    def attachments(self) -> list[EmailMessage]:
        return [p for p in self.message.walk() if p.get_content_disposition() == "attachment"]  # type: ignore[misc]


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        raw = bytes(envelope.content)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.sink.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), raw, message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """aiosmtpd on 127.0.0.1: what freeswitch.email (the stand-in) delivers lands here."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(_Handler(sink), hostname=sink.host, port=sink.port)
    controller.start()
    yield sink
    controller.stop()


# -- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lua_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real callpipe-asr process for the Lua tests, with TEST_KEY configured."""
    running = launch_server(tmp_path_factory.mktemp("lua-server"), {"auth": {"api_keys": [TEST_KEY]}})
    yield running
    stop_server(running)


@pytest.fixture
def start_lua_server(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Server]]:
    """A server with its own settings for one test, stopped at teardown."""
    started: list[Server] = []

    def start(config: dict[str, Any]) -> Server:
        running = launch_server(tmp_path / f"server-{len(started)}", config)
        started.append(running)
        return running

    yield start
    for running in started:
        stop_server(running)


@dataclass
class BlackHole:
    """A TCP listener that accepts, reads and never answers: a hung server."""

    port: int
    received: list[bytearray] = field(default_factory=list)
    """The bytes each connection sent, as they arrive."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    hole = BlackHole(listener.getsockname()[1])
    stop = threading.Event()
    connections: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            connection.settimeout(0.2)
            connections.append(connection)
            data = bytearray()
            hole.received.append(data)
            while not stop.is_set():
                try:
                    chunk = connection.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield hole
    stop.set()
    thread.join(timeout=5)
    for connection in connections:
        connection.close()
    listener.close()
