"""The upload page (``GET /``, ``POST /``, ``/transcripts/{id}`` and its downloads) through
aiohttp's test client and the whole app.

Most tests run the app without workers (``run_workers=False``): nothing ever claims a job, so
a job stays exactly where the test puts it, and the test moves it through the states with a
second connection to the same job store (claim, finish, fail), as a worker in another process
would. The tests marked e2e run the real bundled model on real recordings.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
import time
from typing import Any, AsyncIterator

import aiohttp
import av
import pytest
from aiohttp.test_utils import TestClient

from asr_testkit import Prompt, word_error_rate
from callpipe_asr.jobs.store import JobStore, open_store
from callpipe_asr.transcript import Segment, Transcript
from callpipe_asr.web.state import RUNTIME, SETTINGS
from server_testkit import UploadPageClientFactory

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
AS_BROWSER = {"Accept": BROWSER_ACCEPT}
AS_CURL = {"Accept": "*/*"}
AS_PAGE_SCRIPT = {"X-Requested-With": "fetch"}
JOB_ID = r"[A-Za-z0-9_-]{16,}"
TRANSCRIPT_URL = re.compile(rf"/transcripts/({JOB_ID})")
FORMATS = ("txt", "json", "srt", "vtt")
JOB_TIMEOUT_S = 60.0
WER_LIMIT = 0.3


# --- helpers -----------------------------------------------------------------------------------


def upload_form(
    audio: bytes, filename: str = "voicemail.wav", content_type: str = "audio/wav", **fields: str
) -> aiohttp.FormData:
    """What a browser posts: the file part (its name unquoted, as browsers send it) and fields."""
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", io.BytesIO(audio), filename=filename, content_type=content_type)
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def post_upload(client: TestClient, form: Any, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    return await client.post("/", data=form, headers={**AS_BROWSER, **(headers or {})}, allow_redirects=False)


async def submit(client: TestClient, audio: bytes, **kwargs: Any) -> str:
    """Upload through the form; assert the 303 to the transcript page and return the job id."""
    response = await post_upload(client, upload_form(audio, **kwargs))
    assert response.status == 303, await response.text()
    match = TRANSCRIPT_URL.fullmatch(response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


async def page(client: TestClient, job_id: str) -> tuple[int, str, aiohttp.ClientResponse]:
    response = await client.get(f"/transcripts/{job_id}", headers=AS_BROWSER)
    return response.status, await response.text(), response


def status_of(page_html: str) -> str:
    match = re.search(r'id="status" data-status="(\w+)"', page_html)
    assert match, page_html
    return match.group(1)


def has_meta_refresh(page_html: str) -> bool:
    return re.search(r'<meta http-equiv="refresh" content="\d+">', page_html) is not None


def transcript_shown(page_html: str) -> str:
    match = re.search(r'<pre id="transcript" class="transcript">(.*?)</pre>', page_html, re.S)
    assert match, page_html
    return html.unescape(match.group(1))


async def wait_until_final(client: TestClient, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> aiohttp.ClientResponse:
    """Poll the plain-text form like a script would: until it stops answering 202."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await client.get(f"/transcripts/{job_id}", headers=AS_CURL)
        if response.status != 202:
            return response
        assert response.headers["Retry-After"].isdigit()
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {timeout_s:.0f} s")


def corrupt_adpcm_wav(prompt: Prompt) -> bytes:
    """The prompt as a Microsoft ADPCM WAV (what old voicemail systems write) with a damaged
    stretch in the middle: the header and the first blocks decode, so the upload is accepted,
    but the block headers in the middle are invalid, so the full decode in the worker fails."""
    source = av.open(io.BytesIO(prompt.audio))
    buffer = io.BytesIO()
    target = av.open(buffer, "w", format="wav")
    stream = target.add_stream("adpcm_ms", rate=8000)
    stream.layout = "mono"
    for frame in source.decode(audio=0):
        frame.pts = None
        for packet in stream.encode(frame):
            target.mux(packet)
    for packet in stream.encode(None):
        target.mux(packet)
    target.close()
    source.close()
    data = bytearray(buffer.getvalue())
    middle = len(data) // 2
    data[middle : middle + 1024] = b"\xff" * 1024  # covers several 256-byte blocks' headers
    return bytes(data)


def subtitle_text(document: str) -> str:
    """The spoken text of an SRT or WebVTT document: its cue lines without numbers and times."""
    lines = [line for line in document.splitlines() if line and line != "WEBVTT"]
    return " ".join(line for line in lines if "-->" not in line and not line.isdigit())


def made_up_transcript() -> Transcript:
    return Transcript(
        segments=(
            Segment(" Hello, this is Dana from accounts.", 0.0, 2.5),
            Segment(" Call me back at 5 --> or later.", 2.5, 61.25),
        ),
        language="en",
        duration=62.0,
        model="tiny.en",
    )


@pytest.fixture
async def upload_page_store_for() -> AsyncIterator[Any]:
    """``await store_for(client)``: a second, open connection to the client's job store, closed
    after the test."""
    opened: list[JobStore] = []

    async def connect(client: TestClient) -> JobStore:
        store = open_store(client.app[SETTINGS])
        await store.open()
        opened.append(store)
        return store

    yield connect
    for store in opened:
        await store.close()


# --- the form ----------------------------------------------------------------------------------


async def test_form_has_file_input_language_and_submit(upload_page_client: UploadPageClientFactory) -> None:
    client = await upload_page_client(run_workers=False, server__max_upload_bytes=25 * 1024 * 1024)
    response = await client.get("/", headers=AS_BROWSER)
    assert response.status == 200
    assert response.content_type == "text/html"
    body = await response.text()
    form = re.search(r"<form[^>]*>", body)
    assert form
    assert 'method="post"' in form.group(0) and 'action="/"' in form.group(0)
    assert 'enctype="multipart/form-data"' in form.group(0)
    assert re.search(r'<input[^>]*\btype="file"[^>]*>', body).group(0).count('name="file"') == 1  # type: ignore[union-attr]
    assert re.search(r'<input[^>]*\bname="language"[^>]*>', body)
    assert 'type="submit"' in body
    assert "Up to 25 MiB and 4 hours" in body
    assert 'id="progress"' in body and "upload.js" in body
    for asset in ("/static/style.css", "/static/upload.js", "/static/transcript.js"):
        assert (await client.get(asset)).status == 200, asset


async def test_upload_answers_303_to_an_unguessable_id_at_once(
    upload_page_client: UploadPageClientFactory, prompts: dict[str, Prompt]
) -> None:
    client = await upload_page_client(run_workers=False)  # nothing recognises: the 303 cannot wait for it
    ids = [await submit(client, prompts[name].audio) for name in ("agent-alreadyon", "vm-intro", "conf-onlyperson")]
    assert len(set(ids)) == 3
    for job_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", job_id)
    # Unguessable: no shared prefix or counter between consecutive ids.
    assert len({job_id[:4] for job_id in ids}) == 3

    followed = await client.post("/", data=upload_form(prompts["vm-goodbye"].audio), headers=AS_BROWSER)
    assert [r.status for r in followed.history] == [303]
    assert followed.status == 200 and TRANSCRIPT_URL.fullmatch(followed.url.path)


async def test_pending_pages_show_queue_place_estimate_and_refresh(
    upload_page_client: UploadPageClientFactory, prompts: dict[str, Prompt], upload_page_store_for: Any
) -> None:
    client = await upload_page_client(run_workers=False)
    store = await upload_page_store_for(client)
    first = await submit(client, prompts["agent-alreadyon"].audio, language="en")
    second = await submit(client, prompts["vm-intro"].audio)

    status, body, response = await page(client, second)
    assert status == 200 and status_of(body) == "queued"
    assert "Queued" in body and "2 in line" in body
    assert has_meta_refresh(body)
    assert response.headers["Cache-Control"] == "no-store"
    assert 'id="transcript"' not in body
    assert "to go" not in body  # no job has finished yet, so there is no estimate

    # A worker elsewhere takes the first job: it runs, the second moves up.
    claimed = await store.claim()
    assert claimed is not None and claimed.job.id == first
    status, body, _ = await page(client, first)
    assert status_of(body) == "running" and "Transcribing" in body and has_meta_refresh(body)
    status, body, _ = await page(client, second)
    assert status_of(body) == "queued" and "1 in line" in body

    # Once one job has finished, waiting pages estimate the time left.
    assert await store.finish(first, claimed.token, made_up_transcript())
    third = await submit(client, prompts["conf-onlyperson"].audio)
    status, body, _ = await page(client, third)
    assert status_of(body) == "queued" and "2 in line" in body
    assert re.search(r"about \d+ s to go", body)
    status, body, _ = await page(client, first)
    assert status_of(body) == "done" and not has_meta_refresh(body)


async def test_plain_text_client_gets_202_then_the_text_or_422(
    upload_page_client: UploadPageClientFactory, prompts: dict[str, Prompt], upload_page_store_for: Any
) -> None:
    client = await upload_page_client(run_workers=False)
    store = await upload_page_store_for(client)
    done_id = await submit(client, prompts["agent-alreadyon"].audio)
    failed_id = await submit(client, prompts["vm-intro"].audio)

    for headers in (AS_CURL, {}):  # curl's Accept and none at all
        response = await client.get(f"/transcripts/{failed_id}", headers=headers)
        assert response.status == 202
        assert response.content_type == "text/plain"
        assert response.headers["Retry-After"].isdigit() and int(response.headers["Retry-After"]) >= 1
        assert (await response.text()) == "queued (position 2 in the queue)\n"

    claimed = await store.claim()
    assert claimed is not None and claimed.job.id == done_id
    response = await client.get(f"/transcripts/{done_id}", headers=AS_CURL)
    assert response.status == 202 and (await response.text()) == "running\n" and "Retry-After" in response.headers

    assert await store.finish(done_id, claimed.token, made_up_transcript())
    response = await client.get(f"/transcripts/{done_id}", headers=AS_CURL)
    assert response.status == 200 and response.content_type == "text/plain"
    assert await response.text() == "Hello, this is Dana from accounts. Call me back at 5 --> or later.\n"
    assert "Retry-After" not in response.headers

    claimed = await store.claim()
    assert claimed is not None and claimed.job.id == failed_id
    assert await store.fail(failed_id, claimed.token, "the recording was cut off", "corrupt_audio")
    response = await client.get(f"/transcripts/{failed_id}", headers=AS_CURL)
    assert response.status == 422 and response.content_type == "text/plain"
    assert await response.text() == "failed: the recording was cut off\n"

    status, body, _ = await page(client, failed_id)
    assert status == 200 and status_of(body) == "failed"
    assert re.search(r'id="failure">The recording was cut off<', body)  # a sentence on the page
    assert not has_meta_refresh(body)
    assert 'href="/"' in body


async def test_downloads_in_every_format(
    upload_page_client: UploadPageClientFactory, prompt: Prompt, upload_page_store_for: Any
) -> None:
    client = await upload_page_client(run_workers=False)
    store = await upload_page_store_for(client)
    job_id = await submit(client, prompt.audio, filename="dana.wav")

    # Before it is done: the state (the JSON form always answers with the job document).
    response = await client.get(f"/transcripts/{job_id}.txt")
    assert response.status == 202 and "Retry-After" in response.headers
    document = await (await client.get(f"/transcripts/{job_id}.json")).json()
    assert document["status"] == "queued" and document["queue_position"] == 1 and document["transcript"] is None

    claimed = await store.claim()
    assert claimed is not None
    assert await store.finish(job_id, claimed.token, made_up_transcript())

    status, body, _ = await page(client, job_id)
    for ext in FORMATS:
        assert f'href="/transcripts/{job_id}.{ext}"' in body
    assert "Timed segments" in body and "2.5–61.2" in body

    downloads = {ext: await client.get(f"/transcripts/{job_id}.{ext}") for ext in FORMATS}
    for ext, response in downloads.items():
        assert response.status == 200, ext
        if ext != "json":
            assert response.headers["Content-Disposition"] == f'inline; filename="transcript-{job_id}.{ext}"'
    assert downloads["txt"].content_type == "text/plain"
    assert await downloads["txt"].text() == "Hello, this is Dana from accounts. Call me back at 5 --> or later.\n"
    assert downloads["srt"].content_type == "application/x-subrip"
    assert await downloads["srt"].text() == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello, this is Dana from accounts.\n\n"
        "2\n00:00:02,500 --> 00:01:01,250\nCall me back at 5 -> or later.\n"
    )
    assert downloads["vtt"].content_type == "text/vtt"
    assert await downloads["vtt"].text() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello, this is Dana from accounts.\n\n"
        "00:00:02.500 --> 00:01:01.250\nCall me back at 5 -&gt; or later.\n"  # WebVTT cue text is markup
    )
    assert downloads["json"].content_type == "application/json"
    document = json.loads(await downloads["json"].text())
    assert document["id"] == job_id and document["status"] == "done" and document["filename"] == "dana.wav"
    assert document["transcript"]["text"] == "Hello, this is Dana from accounts. Call me back at 5 --> or later."
    assert [s["end"] for s in document["transcript"]["segments"]] == [2.5, 61.25]
    assert document["links"]["page"] == f"/transcripts/{job_id}"


async def test_unknown_ids_are_404_in_html_and_text(upload_page_client: UploadPageClientFactory) -> None:
    client = await upload_page_client(run_workers=False)
    unknown = "A" * 22
    response = await client.get(f"/transcripts/{unknown}", headers=AS_BROWSER)
    assert response.status == 404 and response.content_type == "text/html"
    body = await response.text()
    assert "Not found" in body and unknown in body and 'href="/"' in body
    response = await client.get(f"/transcripts/{unknown}", headers=AS_CURL)
    assert response.status == 404 and response.content_type == "text/plain"
    assert unknown in await response.text()
    for ext in ("txt", "srt", "vtt"):
        response = await client.get(f"/transcripts/{unknown}.{ext}")
        assert response.status == 404 and response.content_type == "text/plain", ext
    response = await client.get(f"/transcripts/{unknown}.json")
    assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
    assert (await client.get(f"/transcripts/{unknown}/audio")).status == 404


async def test_everything_shown_is_escaped(
    upload_page_client: UploadPageClientFactory, prompt: Prompt, upload_page_store_for: Any
) -> None:
    client = await upload_page_client(run_workers=False)
    store = await upload_page_store_for(client)
    evil_name = "<img src=x onerror=alert(1)>.wav"  # no "/": names are cut to their last path part
    job_id = await submit(client, prompt.audio, filename=evil_name)
    document = await (await client.get(f"/transcripts/{job_id}.json")).json()
    assert document["filename"] == evil_name  # stored as sent

    status, body, _ = await page(client, job_id)
    assert status == 200
    assert "&lt;img src=x onerror=alert(1)&gt;.wav" in body
    assert "<img src=x" not in body

    # The transcript text is shown escaped too (a recogniser may write anything).
    claimed = await store.claim()
    assert claimed is not None
    evil_text = Transcript(segments=(Segment(' <img src=x onerror="alert(2)"> & done', 0.0, 1.0),), language="en", duration=1.0)
    assert await store.finish(job_id, claimed.token, evil_text)
    status, body, _ = await page(client, job_id)
    assert status_of(body) == "done"
    assert "<img" not in body and "&lt;img src=x onerror=" in body
    assert transcript_shown(body) == '<img src=x onerror="alert(2)"> & done'
    assert "<script>alert" not in body


BAD_UPLOADS = [
    pytest.param(lambda p: upload_form(b""), 400, "empty", id="empty-file"),
    pytest.param(lambda p: upload_form(b"Dear caller, this is a text file.\n" * 30, "notes.txt", "text/plain"), 415, "not a recognised audio format", id="text-file"),
    pytest.param(lambda p: aiohttp.FormData({"language": "en"}, default_to_multipart=True), 400, "no 'file' part", id="no-file-part"),
    pytest.param(lambda p: {"language": "en"}, 415, "multipart/form-data", id="not-multipart"),
    pytest.param(lambda p: upload_form(p.audio, language="en; drop"), 400, "language", id="bad-language"),
    pytest.param(lambda p: upload_form(p.audio + p.audio), 413, "larger than", id="over-size"),
]


@pytest.mark.parametrize(("make_form", "status", "message"), BAD_UPLOADS)
async def test_bad_uploads_show_the_form_again_with_the_reason(
    upload_page_client: UploadPageClientFactory, prompt: Prompt, make_form: Any, status: int, message: str
) -> None:
    client = await upload_page_client(run_workers=False, server__max_upload_bytes=len(prompt.audio) + 4096)
    response = await post_upload(client, make_form(prompt))
    assert response.status == status
    assert response.content_type == "text/html"
    body = await response.text()
    error = re.search(r'<p class="error" role="alert" id="error">(.*?)</p>', body, re.S)
    assert error, body
    assert message.lower() in html.unescape(error.group(1)).lower()
    assert 'id="upload-form"' in body and 'type="file"' in body
    assert "Up to 90.2 KiB" in body  # the limit as people read it, not "0 MiB"
    # The page's script gets the same error as JSON, to show it without leaving the page.
    response = await post_upload(client, make_form(prompt), headers=AS_PAGE_SCRIPT)
    assert response.status == status
    assert message in (await response.json())["error"]["message"]
    # Nothing was queued.
    assert (await client.app[RUNTIME].service.stats()).active == 0


async def test_form_keeps_the_language_after_an_error(upload_page_client: UploadPageClientFactory) -> None:
    client = await upload_page_client(run_workers=False)
    response = await post_upload(client, upload_form(b"", language='fr"><b>'))
    assert response.status == 400
    body = await response.text()
    assert 'value="fr&#34;&gt;&lt;b&gt;"' in body and "<b>" not in body


async def test_over_size_upload_is_refused_while_it_streams(
    upload_page_client: UploadPageClientFactory, prompt: Prompt
) -> None:
    """No Content-Length (chunked): the limit holds while the body is read."""
    client = await upload_page_client(run_workers=False, server__max_upload_bytes=20_000)
    boundary = "callpipe-test-boundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"long.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for start in range(0, len(prompt.audio), 8192):
            yield prompt.audio[start : start + 8192]
        yield tail

    response = await client.post(
        "/", data=body(), headers={**AS_BROWSER, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status == 413
    assert "larger than" in await response.text()


async def test_full_queue_is_429_with_retry_after(
    upload_page_client: UploadPageClientFactory, prompts: dict[str, Prompt]
) -> None:
    client = await upload_page_client(run_workers=False, jobs__max_queued=1)  # the first job stays queued
    await submit(client, prompts["agent-alreadyon"].audio)
    response = await post_upload(client, upload_form(prompts["vm-intro"].audio))
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    body = await response.text()
    assert "queue is full" in body and 'id="upload-form"' in body
    response = await post_upload(client, upload_form(prompts["vm-intro"].audio), headers=AS_PAGE_SCRIPT)
    assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"]["code"] == "queue_full"


@pytest.mark.parametrize("keep_audio", [True, False], ids=["audio-kept", "audio-dropped"])
async def test_player_only_while_the_recording_is_kept(
    upload_page_client: UploadPageClientFactory, prompt: Prompt, upload_page_store_for: Any, keep_audio: bool
) -> None:
    client = await upload_page_client(run_workers=False, jobs__keep_audio=keep_audio)
    store = await upload_page_store_for(client)
    job_id = await submit(client, prompt.audio)
    claimed = await store.claim()
    assert claimed is not None
    assert await store.finish(job_id, claimed.token, made_up_transcript())
    status, body, _ = await page(client, job_id)
    assert status_of(body) == "done"
    player = re.search(r"<audio[^>]*>", body)
    response = await client.get(f"/transcripts/{job_id}/audio")
    if keep_audio:
        assert player and f'src="/transcripts/{job_id}/audio"' in player.group(0) and "controls" in player.group(0)
        assert response.status == 200 and response.content_type == "audio/wav"
        assert await response.read() == prompt.audio
    else:
        assert player is None
        assert response.status == 404


# --- with the real model -----------------------------------------------------------------------


@pytest.mark.e2e
async def test_real_recording_end_to_end(upload_page_client: UploadPageClientFactory, prompt: Prompt) -> None:
    """Upload a real voicemail prompt through POST /, follow the 303, wait for the transcript and
    compare it with the reference by word error rate; then every form of it."""
    client = await upload_page_client(jobs__keep_audio=True)
    started = time.monotonic()
    response = await client.post("/", data=upload_form(prompt.audio, filename="agent.wav", language="en"))
    assert [r.status for r in response.history] == [303]
    job_id = TRANSCRIPT_URL.fullmatch(response.url.path).group(1)  # type: ignore[union-attr]
    assert response.status in (200, 202)

    status, body, _ = await page(client, job_id)
    assert status == 200
    if status_of(body) != "done":
        assert has_meta_refresh(body) and "This page refreshes itself" in body

    final = await wait_until_final(client, job_id)
    assert final.status == 200, await final.text()
    assert final.content_type == "text/plain"
    text = (await final.text()).strip()
    assert word_error_rate(prompt.text, text) < WER_LIMIT, text
    assert time.monotonic() - started < JOB_TIMEOUT_S

    status, body, _ = await page(client, job_id)
    assert status_of(body) == "done" and not has_meta_refresh(body)
    assert transcript_shown(body) == text
    assert f'src="/transcripts/{job_id}/audio"' in body
    assert 'id="copy"' in body
    assert "agent.wav" in body and "5.5 s" in body

    audio = await client.get(f"/transcripts/{job_id}/audio")
    assert audio.status == 200 and await audio.read() == prompt.audio
    assert await (await client.get(f"/transcripts/{job_id}.txt")).text() == text + "\n"
    document = await (await client.get(f"/transcripts/{job_id}.json")).json()
    assert document["status"] == "done" and document["transcript"]["text"] == text
    assert document["transcript"]["language"] == "en"
    srt = await (await client.get(f"/transcripts/{job_id}.srt")).text()
    assert re.match(r"1\n00:00:0\d,\d{3} --> 00:00:0\d,\d{3}\n\S", srt), srt
    vtt = await (await client.get(f"/transcripts/{job_id}.vtt")).text()
    assert re.match(r"WEBVTT\n\n00:00:0\d\.\d{3} --> 00:00:0\d\.\d{3}\n\S", vtt), vtt
    for subtitles in (srt, vtt):
        assert word_error_rate(prompt.text, subtitle_text(subtitles)) < WER_LIMIT


@pytest.mark.e2e
async def test_recording_that_cannot_be_decoded_ends_failed_with_the_reason(
    upload_page_client: UploadPageClientFactory, prompt: Prompt
) -> None:
    client = await upload_page_client()
    job_id = await submit(client, corrupt_adpcm_wav(prompt), filename="damaged.wav")  # accepted: its start is fine
    final = await wait_until_final(client, job_id)
    assert final.status == 422 and final.content_type == "text/plain"
    reason = await final.text()
    assert reason.startswith("failed: the audio cannot be decoded"), reason
    assert "Retry-After" not in final.headers

    status, body, _ = await page(client, job_id)
    assert status == 200 and status_of(body) == "failed" and not has_meta_refresh(body)
    assert "The audio cannot be decoded" in body and "Try another file" in body
    assert 'id="transcript"' not in body
    document = await (await client.get(f"/transcripts/{job_id}.json")).json()
    assert document["status"] == "failed" and document["error"]["code"] == "corrupt_audio"
