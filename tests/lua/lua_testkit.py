"""Plain helpers of the FreeSWITCH Lua tests (``from lua_testkit import ...``): where the
scripts are, what one run under ``freeswitch_stub.lua`` asked of FreeSWITCH, the mail the SMTP
server received, and the hung server. The fixtures that make them are in this folder's conftest.

A module, not the conftest, for the reason ``server_testkit`` gives: ``from conftest import``
reaches whichever folder's conftest pytest imported last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
LUA_DIR = REPO_DIR / "lua"
SCRIPT = LUA_DIR / "voicemail_transcribe.lua"
STUB = Path(__file__).resolve().parent / "freeswitch_stub.lua"
INTERPRETERS = ("lua5.3", "lua5.2")


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


@dataclass
class BlackHole:
    """A TCP listener that accepts, reads and never answers: a hung server."""

    port: int
    received: list[bytearray] = field(default_factory=list)
    """The bytes each connection sent, as they arrive."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
