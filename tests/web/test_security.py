"""Security checks at the HTTP edge: what a hostile client can put in file names, form parts and
headers, and where API keys must never show up.

In-process (the whole app on a real loopback socket, no workers; jobs are moved through their
states with a second store on the same database, as ``callpipe-asr jobs`` does): file names with
path traversal, control characters and HTML; HTML in transcripts and errors on every page;
oversize headers and form parts; forms with thousands of parts. Against a real server process:
keys in each dialect's headers never appear in answers or in its log, even at DEBUG.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import quote

import pytest
import yaml
from aiohttp.test_utils import TestClient

from asr_testkit import Prompt
from callpipe_asr.jobs.sqlite_store import SQLiteJobStore
from callpipe_asr.settings import Settings
from callpipe_asr.transcript import Segment, Transcript
from callpipe_asr.web.app import create_app

HOSTILE_NAMES = {
    "../../../../tmp/callpipe-evil.wav": "../../../../tmp/callpipe-evil.wav",
    "..\\..\\..\\windows\\evil.wav": "..\\..\\..\\windows\\evil.wav",
    "/etc/passwd": "/etc/passwd",
    "nul\x00byte.wav": "nulbyte.wav",
    "line\r\nX-Injected: yes.wav": "lineX-Injected: yes.wav",
    "\u202egnp.wav": "gnp.wav",  # a right-to-left override would show it as "vaw.png"
    "\x1b[2Jterminal.wav": "[2Jterminal.wav",
    "😀 voicemail.wav": "😀 voicemail.wav",
    "x" * 4000 + ".wav": "x" * 214 + "…" + "x" * 36 + ".wav",
}
"""What a client sends as a file name -> what is stored and shown: the name as data (no file is
ever made from it), without control or reordering characters, at most 255 characters."""
HTML_NAME = '<script>alert("name")</script>.wav'
HTML_TEXT = "<img src=x onerror=alert(1)> call me back"
HTML_ERROR = "<b onclick=alert(2)>bad</b> audio"
HTML_MARKERS = ("<script>alert", "<img src=x", "<b onclick")


@pytest.fixture
async def app_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[TestClient, SQLiteJobStore]]:
    """The app without workers, and a second store on its database to finish jobs by hand."""
    settings = make_settings(jobs__keep_audio=True)
    client = await aiohttp_client(create_app(settings, run_workers=False))
    store = SQLiteJobStore(settings.database_path, settings.jobs)
    await store.open()
    yield client, store
    await store.close()


def form(audio: bytes, filename: str, field: str = "file", **fields: str) -> tuple[bytes, dict[str, str]]:
    """A multipart body whose file name goes as RFC 5987 ``filename*`` (any character, CR, LF
    and NUL included, can be sent that way) and as a plain ``filename`` where it is printable."""
    boundary = uuid.uuid4().hex
    plain = filename if filename.isprintable() and '"' not in filename else "upload.wav"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode() for name, value in fields.items()]
    parts.append(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{plain}\"; "
        f"filename*=UTF-8''{quote(filename, safe='')}\r\nContent-Type: audio/wav\r\n\r\n".encode() + audio + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


async def finish(store: SQLiteJobStore, text: str) -> None:
    claimed = await store.claim()
    assert claimed is not None
    transcript = Transcript(segments=(Segment(text=" " + text, start=0.0, end=1.0),), language="en", duration=1.0)
    assert await store.finish(claimed.job.id, claimed.token, transcript)


async def test_file_names_are_kept_as_data_never_used_as_paths(
    app_client: tuple[TestClient, SQLiteJobStore], prompt: Prompt, tmp_path: Path
) -> None:
    client, _ = app_client
    assert not Path("/tmp/callpipe-evil.wav").exists()
    before = files_under(tmp_path)
    for index, (name, shown) in enumerate(HOSTILE_NAMES.items()):
        body, headers = form(prompt.audio + bytes([index]), name)  # distinct audio: distinct jobs
        answer = await client.post("/api/v1/jobs", data=body, headers=headers)
        assert answer.status == 202, (name, await answer.text())
        assert "X-Injected" not in answer.headers
        job = await (await client.get(f"/api/v1/jobs/{(await answer.json())['id']}")).json()
        assert job["filename"] == shown
        page = await client.get(f"/transcripts/{job['id']}", headers={"Accept": "text/html"})
        html = await page.text()
        assert page.status == 200 and "X-Injected" not in page.headers
        assert not any(char in html for char in "\x00\x1b\u202e")
    created = {path.relative_to(tmp_path) for path in files_under(tmp_path) - before}
    assert all(path.parts[0] == "data" for path in created), created
    assert not Path("/tmp/callpipe-evil.wav").exists()


async def test_html_in_names_transcripts_and_errors_is_escaped_on_every_page(
    app_client: tuple[TestClient, SQLiteJobStore], prompt: Prompt
) -> None:
    client, store = app_client
    html = {"Accept": "text/html"}
    ids = []
    for index in range(2):
        body, headers = form(prompt.audio + bytes([index]), HTML_NAME)
        answer = await client.post("/api/v1/jobs", data=body, headers=headers)
        ids.append((await answer.json())["id"])
    pages = [await client.get(f"/transcripts/{ids[0]}", headers=html)]  # queued
    await finish(store, HTML_TEXT)
    claimed = await store.claim()
    assert claimed is not None and await store.fail(claimed.job.id, claimed.token, HTML_ERROR, "corrupt_audio")
    for job_id in ids:
        pages.append(await client.get(f"/transcripts/{job_id}", headers=html))
        pages.append(await client.get(f"/transcripts/{job_id}"))  # plain text
        for ext in ("txt", "json", "srt", "vtt"):
            pages.append(await client.get(f"/transcripts/{job_id}.{ext}"))
    rejected, headers = form(b"not audio at all " * 20, HTML_NAME)
    pages.append(await client.post("/", data=rejected, headers=headers))  # the form again, with the problem
    pages.append(await client.get("/"))
    pages.append(await client.get("/transcripts/unknown-id", headers=html))

    rendered = 0
    for page in pages:
        body = await page.text()
        if page.content_type == "text/html":
            rendered += 1
            assert not any(marker in body for marker in HTML_MARKERS), (page.url, body[:2000])
        else:
            assert page.content_type in ("text/plain", "application/json", "text/vtt", "application/x-subrip"), page.content_type
    assert rendered >= 5
    done_page = await (await client.get(f"/transcripts/{ids[0]}", headers=html)).text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in done_page and "&lt;script&gt;alert" in done_page
    failed_page = await (await client.get(f"/transcripts/{ids[1]}", headers=html)).text()
    assert "&lt;b onclick=alert(2)&gt;" in failed_page


async def raw_exchange(client: TestClient, request: bytes, timeout: float = 20.0) -> int:
    """Send ``request`` bytes on a connection of our own; the answer's status (0: closed silently)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.read(4096), timeout)
    except ConnectionError:
        return 0
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0


async def test_oversize_request_lines_and_headers_are_refused(app_client: tuple[TestClient, SQLiteJobStore]) -> None:
    client, _ = app_client
    long_line = b"GET /healthz?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    long_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n"
    many_headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n"
    for request in (long_line, long_header, many_headers):
        assert await raw_exchange(client, request) in (400, 414, 431)
    assert (await client.get("/healthz")).status == 200


async def test_oversize_form_parts_are_refused_at_the_limit(app_client: tuple[TestClient, SQLiteJobStore], prompt: Prompt) -> None:
    client, _ = app_client
    body, headers = form(prompt.audio, "call.wav", language="e" * 200_000)
    answer = await client.post("/api/v1/jobs", data=body, headers=headers)
    assert answer.status == 413, await answer.text()
    boundary = uuid.uuid4().hex
    giant_part_head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{'n' * 100_000}\"\r\n\r\n".encode()
        + prompt.audio + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = await client.post("/api/v1/jobs", data=giant_part_head, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert 400 <= answer.status < 500, await answer.text()


async def test_a_form_with_thousands_of_parts_is_refused_quickly(app_client: tuple[TestClient, SQLiteJobStore]) -> None:
    client, _ = app_client
    boundary = uuid.uuid4().hex
    parts = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode() for i in range(20_000))
    started = time.monotonic()
    answer = await client.post(
        "/api/v1/jobs", data=io.BytesIO(parts + f"--{boundary}--\r\n".encode()),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert answer.status == 400 and "parts" in (await answer.json())["error"]["message"]
    assert time.monotonic() - started < 5, "the work stops at the part limit"


# --- keys in every dialect's headers, against a real server process ------------------------------

RIGHT_KEY = "right-key-7f3a9c1e5b2d"
WRONG_KEY = "wrong-key-4d8e2b6a0c9f"
SERVER_READY_SECONDS = 90


def credential_requests(key: str) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """(method, path, headers, body) presenting ``key`` in each dialect's own style."""
    basic = base64.b64encode(f"apikey:{key}".encode()).decode()
    return [
        ("GET", "/api/v1/jobs/none", {"Authorization": f"Bearer {key}"}, None),
        ("GET", "/api/v1/jobs/none", {"X-Api-Key": key}, None),
        ("POST", "/transcribe", {"Authorization": f"Bearer {key}", "Content-Type": "text/plain"}, b"x"),
        ("GET", "/v1/models", {"Authorization": f"Bearer {key}"}, None),
        ("GET", "/watson/v1/models", {"Authorization": f"Basic {basic}"}, None),
        ("POST", "/v1/listen", {"Authorization": f"Token {key}", "Content-Type": "audio/wav"}, b"RIFF"),
        ("GET", f"/v1/operations?key={key}", {}, None),
        ("GET", "/v1/operations", {"X-Goog-Api-Key": key}, None),
        ("POST", "/sts/v1.0/issueToken", {"Ocp-Apim-Subscription-Key": key}, b""),
        ("POST", "/speech/recognition/conversation/cognitiveservices/v1?language=en-US",
         {"Ocp-Apim-Subscription-Key": key, "Content-Type": "audio/wav"}, b"RIFF"),
        ("GET", "/v2/transcript", {"Authorization": key}, None),
        ("GET", "/", {"Authorization": f"Bearer {key}"}, None),
    ]


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real server with one API key, logging at DEBUG into a file; (url, log path)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"auth": {"api_keys": [RIGHT_KEY]}}))
    port = free_port()
    log_path = tmp_path / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALLPIPE_ASR_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "callpipe_asr", "serve", "--config", str(config), "--port", str(port),
             "--data-dir", str(tmp_path / "data"), "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT, env=environment,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_READY_SECONDS
        while not _answers(url + "/healthz"):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        yield url, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def exchange(url: str, method: str, headers: dict[str, str], body: bytes | None) -> tuple[int, str]:
    """Status, and the answer's headers and body as one text."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, str(answer.headers) + answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, str(error.headers) + error.read().decode(errors="replace")


@pytest.mark.e2e
def test_keys_in_every_dialects_headers_never_leak_into_answers_or_logs(keyed_server: tuple[str, Path]) -> None:
    url, log_path = keyed_server
    statuses = {}
    for key in (RIGHT_KEY, WRONG_KEY):
        for method, path, headers, body in credential_requests(key):
            status, answer = exchange(url + path, method, headers, body)
            statuses[(key, method, path.split("?")[0], tuple(headers))] = status
            assert RIGHT_KEY not in answer and WRONG_KEY not in answer, (method, path, answer[:500])
            assert status < 500, (method, path, status, answer[:500])
    wrong = [status for (key, *_), status in statuses.items() if key == WRONG_KEY]
    right = [status for (key, *_), status in statuses.items() if key == RIGHT_KEY]
    assert not any(status in (401, 403) for status in right), sorted(statuses.items())
    refused = {k[1:3]: v for k, v in statuses.items() if k[0] == WRONG_KEY}
    # Each dialect's own refusal: 401/403, and Google's 400 API_KEY_INVALID.
    assert all(status in (400, 401, 403) for status in wrong), sorted(refused.items())
    log = log_path.read_text(errors="replace")
    assert "DEBUG" in log, "the server logged at DEBUG"
    assert RIGHT_KEY not in log and WRONG_KEY not in log
