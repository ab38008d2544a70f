"""The native JSON API (/api/v1/jobs), health checks and the OpenAPI document, through the app
factory with the real bundled model and real recordings."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from callpipe_asr.settings import Settings
from callpipe_asr.web.app import create_app
from asr_testkit import Prompt, word_error_rate

READY_TIMEOUT_SECONDS = 60


async def assert_native_error(response: aiohttp.ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The one shape every native error has: {"error": {"code", "message", "status"}}."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["status"] == status
    if code is not None:
        assert error["code"] == code, error
    return error


async def wait_ready(client: TestClient) -> None:
    for _ in range(READY_TIMEOUT_SECONDS * 10):
        if (await client.get("/readyz")).status == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the server never became ready")


def upload(audio: bytes, filename: str = "voicemail.wav", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(audio), filename=filename, content_type="application/octet-stream")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


def fields_only(**fields: str) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields.items():
        writer.append(value).set_content_disposition("form-data", name=name)
    return writer


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]) -> TestClient:
    client = await aiohttp_client(create_app(make_settings(server__max_upload_bytes=2_000_000)))
    await wait_ready(client)
    return client


async def test_wait_returns_the_finished_job_with_a_faithful_transcript(client: TestClient, prompt: Prompt) -> None:
    response = await client.post("/api/v1/jobs", data=upload(prompt.audio, wait="120"))
    assert response.status == 200
    job = await response.json()
    assert job["status"] == "done"
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    transcript = job["transcript"]
    assert word_error_rate(prompt.text, transcript["text"]) < 0.2
    assert transcript["language"] == "en"
    assert transcript["duration"] == pytest.approx(5.52, abs=0.05)
    words = [w for s in transcript["segments"] for w in s["words"]]
    assert words and all(0 <= w["start"] <= w["end"] <= transcript["duration"] + 0.5 for w in words)
    assert job["attempts"] == 1 and job["error"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", job["finished_at"])


async def test_word_timestamps_false_gives_the_text_without_words(client: TestClient, prompt: Prompt) -> None:
    """What the voicemail Lua asks for: the same text, segments with times, no word alignment."""
    response = await client.post("/api/v1/jobs", data=upload(prompt.audio, wait="120", word_timestamps="false"))
    job = await response.json()
    assert job["status"] == "done" and job["options"]["word_timestamps"] is False
    transcript = job["transcript"]
    assert word_error_rate(prompt.text, transcript["text"]) < 0.2
    assert transcript["segments"] and all(s["words"] == [] for s in transcript["segments"])
    assert all(0 <= s["start"] < s["end"] <= transcript["duration"] + 0.5 for s in transcript["segments"])


async def test_text_only_request_gives_the_same_text_in_speech_long_segments(client: TestClient, prompt: Prompt) -> None:
    """What the voicemail Lua asks for: no words and no segment times, so Whisper decodes text
    only; the one segment spans the speech the VAD found, inside the recording."""
    fields = {"wait": "120", "word_timestamps": "false", "segment_timestamps": "false"}
    job = await (await client.post("/api/v1/jobs", data=upload(prompt.audio, **fields))).json()
    assert job["status"] == "done"
    assert job["options"]["word_timestamps"] is False and job["options"]["segment_timestamps"] is False
    transcript = job["transcript"]
    assert word_error_rate(prompt.text, transcript["text"]) < 0.2
    [segment] = transcript["segments"]
    assert segment["words"] == [] and 0 <= segment["start"] < 1.0 and 4.5 < segment["end"] <= transcript["duration"]


async def test_accepted_job_is_polled_until_done(client: TestClient, prompts: dict[str, Prompt]) -> None:
    prompt = prompts["all-circuits-busy-now"]
    response = await client.post("/api/v1/jobs", data=upload(prompt.audio))
    assert response.status == 202
    accepted = await response.json()
    assert accepted["status"] in ("queued", "running")
    assert len(accepted["id"]) >= 16
    assert accepted["links"]["self"] == f"/api/v1/jobs/{accepted['id']}"
    for _ in range(600):
        job = await (await client.get(accepted["links"]["self"])).json()
        if job["status"] == "done":
            break
        assert job["status"] in ("queued", "running")
        await asyncio.sleep(0.1)
    assert word_error_rate(prompt.text, job["transcript"]["text"]) < 0.3


async def test_duplicate_requests_attach_to_the_same_job(client: TestClient, prompt: Prompt) -> None:
    first = await (await client.post("/api/v1/jobs", data=upload(prompt.audio, wait="120"))).json()
    again = await (await client.post("/api/v1/jobs", data=upload(prompt.audio, filename="retry.wav"))).json()
    assert again["id"] == first["id"]
    assert again["status"] == "done"
    other = await (await client.post("/api/v1/jobs", data=upload(prompt.audio, prompt="agents"))).json()
    assert other["id"] != first["id"]


async def test_delete_removes_the_job(client: TestClient, prompt: Prompt) -> None:
    job = await (await client.post("/api/v1/jobs", data=upload(prompt.audio, wait="120"))).json()
    assert (await client.delete(f"/api/v1/jobs/{job['id']}")).status == 204
    await assert_native_error(await client.get(f"/api/v1/jobs/{job['id']}"), 404, "not_found")
    await assert_native_error(await client.delete(f"/api/v1/jobs/{job['id']}"), 404, "not_found")


async def test_unknown_job_is_a_json_404(client: TestClient) -> None:
    await assert_native_error(await client.get("/api/v1/jobs/doesnotexist"), 404, "not_found")


async def test_bad_requests_get_native_errors(client: TestClient, prompt: Prompt) -> None:
    checks = [
        (await client.post("/api/v1/jobs", json={"file": "x"}), 415, "unsupported_media_type"),
        (await client.post("/api/v1/jobs", data={"language": "en"}), 415, "unsupported_media_type"),
        (await client.post("/api/v1/jobs", data=fields_only(language="en")), 400, "invalid_request"),
        (await client.post("/api/v1/jobs", data=upload(b"")), 400, "empty_audio"),
        (await client.post("/api/v1/jobs", data=upload(b"this is not audio at all " * 40)), 415, "unsupported_audio"),
        (await client.post("/api/v1/jobs", data=upload(b"\0" * 2_100_000)), 413, "payload_too_large"),
        (await client.post("/api/v1/jobs", data=upload(prompt.audio, wait="soon")), 400, "invalid_request"),
        (await client.post("/api/v1/jobs", data=upload(prompt.audio, language="en; drop")), 400, "invalid_request"),
        (await client.post("/api/v1/jobs", data=upload(prompt.audio, channels="both")), 400, "invalid_request"),
        (await client.post("/api/v1/jobs", data=upload(prompt.audio, word_timestamps="maybe")), 400, "invalid_request"),
        (await client.post("/api/v1/jobs", data=upload(prompt.audio, segment_timestamps="no-thanks")), 400, "invalid_request"),
        (await client.post("/api/v1/jobs", data=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"}), 400, None),
    ]
    for response, status, code in checks:
        await assert_native_error(response, status, code)


async def test_unknown_path_and_method_are_json_errors(client: TestClient) -> None:
    await assert_native_error(await client.get("/nope"), 404)
    await assert_native_error(await client.put("/api/v1/jobs"), 405)


async def test_health_ready_and_openapi(client: TestClient) -> None:
    assert (await (await client.get("/healthz")).json())["status"] == "ok"
    ready = await (await client.get("/readyz")).json()
    assert ready["checks"] == {"store": "ok", "model": "ok"}
    document = await (await client.get("/openapi.json")).json()
    documented = set(document["paths"])
    for resource in client.app.router.resources():
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", resource.canonical)
        if path.startswith("/static"):
            continue
        assert path in documented, f"{path} is missing from openapi.yaml"


async def test_readyz_is_503_while_the_default_model_cannot_load(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    settings = make_settings(models={"tiny.en": {"source": str(tmp_path / "no-model-here")}})
    client = await aiohttp_client(create_app(settings))
    for _ in range(50):
        body = await (await client.get("/readyz")).json()
        if body["checks"].get("model", "").startswith("failed"):
            break
        await asyncio.sleep(0.1)
    response = await client.get("/readyz")
    assert response.status == 503
    assert "no CTranslate2 model" in (await response.json())["checks"]["model"]
    assert (await client.get("/healthz")).status == 200


async def test_keys_are_checked_and_each_key_sees_only_its_jobs(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], prompt: Prompt
) -> None:
    client = await aiohttp_client(create_app(make_settings(auth__api_keys=["key-one", "key-two"])))
    await wait_ready(client)
    await assert_native_error(await client.post("/api/v1/jobs", data=upload(prompt.audio)), 401, "unauthenticated")
    wrong = await client.post("/api/v1/jobs", data=upload(prompt.audio), headers={"Authorization": "Bearer nope"})
    await assert_native_error(wrong, 401, "invalid_api_key")
    one = {"Authorization": "Bearer key-one"}
    created = await client.post("/api/v1/jobs", data=upload(prompt.audio), headers=one)
    assert created.status == 202
    job_id = (await created.json())["id"]
    assert (await client.get(f"/api/v1/jobs/{job_id}", headers=one)).status == 200
    assert (await client.get(f"/api/v1/jobs/{job_id}", headers={"X-Api-Key": "key-one"})).status == 200
    other = {"Authorization": "Bearer key-two"}
    await assert_native_error(await client.get(f"/api/v1/jobs/{job_id}", headers=other), 404, "not_found")
    await assert_native_error(await client.delete(f"/api/v1/jobs/{job_id}", headers=other), 404, "not_found")
    assert (await client.delete(f"/api/v1/jobs/{job_id}", headers=one)).status == 204
