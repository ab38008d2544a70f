"""Fixtures of the FreeSWITCH Lua tests: the scripts run under real Lua interpreters (Debian
``lua5.3`` and ``lua5.2``) inside ``freeswitch_stub.lua``, the stand-in for FreeSWITCH's host
object, against real callpipe-asr server processes and a real SMTP server (aiosmtpd).

The plain helpers are imported, never loaded from a conftest: ``lua_testkit`` (this folder's
types and paths), ``server_testkit`` (server processes); see ``server_testkit`` for why.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from lua_testkit import INTERPRETERS, SCRIPT, STUB, BlackHole, LuaRun, ReceivedMail, RunLua, SmtpSink
from server_testkit import TEST_KEY, Server, StartServer, free_port, launch, started_servers, stop


# -- running Lua ------------------------------------------------------------------------------


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
    running = launch(tmp_path_factory.mktemp("lua-server"), {"auth": {"api_keys": [TEST_KEY]}})
    yield running
    stop(running)


@pytest.fixture
def start_lua_server(tmp_path: Path) -> Iterator[StartServer]:
    """A server with its own settings for one test, stopped at teardown."""
    with started_servers(tmp_path) as start:
        yield start


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
