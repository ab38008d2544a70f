"""Slow clients against a real server process (its own runner, as deployed): a connection that
never completes its request head is closed after ``server.idle_timeout_seconds``, and a body
that stalls is answered 408 after ``server.body_read_timeout_seconds``; the server answers
everyone else meanwhile. (Every limit in-process: ``tests/web/test_limits.py``.)"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable

import pytest

pytestmark = pytest.mark.e2e

TIMEOUT_SECONDS = 2


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=TIMEOUT_SECONDS * 10)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_slow_headers_are_cut_off_and_stalled_bodies_get_408(start_server: Callable[..., Any], tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "data",
        CALLPIPE_ASR_SERVER__IDLE_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
        CALLPIPE_ASR_SERVER__BODY_READ_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
    )
    with connect(server.url) as slow_head:
        slow_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and nothing more
        started = time.monotonic()
        assert server.get("/healthz").status == 200, "others are served meanwhile"
        assert read_until_closed(slow_head) == b"", "closed without an answer"
        assert TIMEOUT_SECONDS * 0.5 <= time.monotonic() - started <= TIMEOUT_SECONDS * 5

    with connect(server.url) as stalled:
        stalled.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nRIFF"
        )
        started = time.monotonic()
        answer = stalled.recv(65536)
        assert time.monotonic() - started <= TIMEOUT_SECONDS * 5
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        if b"\r\n\r\n{" not in answer:  # the body may come in a second read
            answer += stalled.recv(65536)
        assert b"request_timeout" in answer
