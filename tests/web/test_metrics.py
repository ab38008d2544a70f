"""Prometheus metrics at /metrics: every metric once, per app, low-cardinality labels, the queue
read from the store on scrape, job and worker metrics from a real recognition, the token."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from asr_testkit import Prompt, word_error_rate
from callpipe_asr.settings import Settings
from callpipe_asr.web.app import create_app
from callpipe_asr.web.state import RUNTIME

KEY = "metrics-test-key-0123456789"
TOKEN = "scrape-token-0123456789"
EXPECTED = {
    "callpipe_asr_http_requests": "counter",
    "callpipe_asr_http_request_duration_seconds": "histogram",
    "callpipe_asr_access_denied": "counter",
    "callpipe_asr_queue_jobs": "gauge",
    "callpipe_asr_queue_oldest_job_age_seconds": "gauge",
    "callpipe_asr_jobs": "counter",
    "callpipe_asr_audio_seconds": "counter",
    "callpipe_asr_real_time_factor": "histogram",
    "callpipe_asr_model_load_seconds": "gauge",
    "callpipe_asr_store_up": "gauge",
    "callpipe_asr_workers": "gauge",
    "callpipe_asr_worker_busy_ratio": "gauge",
    "callpipe_asr_worker_busy_seconds": "counter",
    "callpipe_asr_build_info": "gauge",
}

Start = Callable[..., Awaitable[TestClient]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def start(aiohttp_client: Callable[..., Awaitable[TestClient]], make_settings: Callable[..., Settings]) -> Start:
    async def build(*, run_workers: bool = False, **overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_settings(**overrides), run_workers=run_workers))

    return build


async def scrape(client: TestClient, token: str | None = None) -> tuple[dict[str, str], Samples]:
    """The metric families (name -> type) and every sample (name, labels) -> value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    families = list(text_string_to_metric_families(await response.text()))
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}
    return {f.name: f.type for f in families}, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample, labels in samples if sample == name and label in dict(labels)}


async def test_every_metric_is_defined_once_in_a_registry_of_the_apps_own(start: Start) -> None:
    first, second = await start(), await start()
    for _ in range(3):
        await first.get("/healthz")
    families, samples = await scrape(first)
    assert {name: families.get(name) for name in EXPECTED} == EXPECTED
    assert value(samples, "callpipe_asr_http_requests_total", dialect="health", status_class="2xx", key="") == 3
    _, other = await scrape(second)  # another app counts its own requests only
    assert ("callpipe_asr_http_requests_total", frozenset({("dialect", "health"), ("status_class", "2xx"), ("key", "")})) not in other


async def test_requests_are_labelled_by_dialect_status_class_and_key_name_never_by_path(start: Start) -> None:
    client = await start(auth__keys={"pbx": {"key": KEY}})
    bearer = {"Authorization": f"Bearer {KEY}"}
    for job_id in ("job-aaaa", "job-bbbb", "job-cccc"):
        assert (await client.get(f"/api/v1/jobs/{job_id}", headers=bearer)).status == 404
    assert (await client.get("/v1/models", headers=bearer)).status == 200
    assert (await client.get("/v1/models", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/no/such/path")).status == 404
    _, samples = await scrape(client)
    requests = "callpipe_asr_http_requests_total"
    assert value(samples, requests, dialect="native", status_class="4xx", key="pbx") == 3
    assert value(samples, requests, dialect="openai", status_class="2xx", key="pbx") == 1
    assert value(samples, requests, dialect="openai", status_class="4xx", key="") == 1
    assert value(samples, requests, dialect="none", status_class="4xx", key="") == 1
    assert value(samples, "callpipe_asr_access_denied_total", reason="invalid_key", key="") == 1
    assert value(samples, "callpipe_asr_http_request_duration_seconds_count", dialect="native") == 3
    every_label_value = {v for (_, labels) in samples for _, v in labels}
    assert not any("job-" in v or "/" in v for v in every_label_value)


async def test_queue_depth_and_oldest_queued_age_are_read_from_the_store_on_scrape(
    start: Start, prompts: dict[str, Prompt]
) -> None:
    client = await start()  # no workers: jobs stay queued
    _, empty = await scrape(client)
    assert value(empty, "callpipe_asr_queue_jobs", state="queued") == 0
    assert value(empty, "callpipe_asr_queue_oldest_job_age_seconds") == 0
    for name in ("agent-alreadyon", "agent-loggedoff"):
        form = FormData()
        form.add_field("file", prompts[name].audio, filename=f"{name}.wav", content_type="audio/wav")
        assert (await client.post("/api/v1/jobs", data=form)).status == 202
    _, first = await scrape(client)
    await asyncio.sleep(1.1)
    _, later = await scrape(client)
    assert value(first, "callpipe_asr_queue_jobs", state="queued") == 2
    assert value(first, "callpipe_asr_queue_jobs", state="running") == 0
    assert value(later, "callpipe_asr_queue_oldest_job_age_seconds") >= value(first, "callpipe_asr_queue_oldest_job_age_seconds") + 1
    assert value(later, "callpipe_asr_workers") == 0  # this app runs none


async def test_a_scrape_answers_when_the_store_does_not(start: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await start()

    async def unreachable() -> None:
        raise OSError("database is locked")

    monkeypatch.setattr(client.app[RUNTIME].service, "stats", unreachable)
    _, samples = await scrape(client)
    assert value(samples, "callpipe_asr_store_up") == 0
    assert value(samples, "callpipe_asr_queue_jobs", state="queued") != value(samples, "callpipe_asr_queue_jobs", state="queued")  # NaN


async def test_metrics_can_require_their_own_token(start: Start) -> None:
    client = await start(metrics__token=TOKEN, auth__keys={"pbx": {"key": KEY}})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {KEY}"}):
        refused = await client.get("/metrics", headers=headers)
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    families, _ = await scrape(client, TOKEN)
    assert "callpipe_asr_http_requests" in families
    assert (await client.get("/healthz")).status == 200  # health stays open


@pytest.mark.e2e
async def test_a_recognised_job_moves_the_job_audio_speed_model_and_worker_metrics(start: Start, prompt: Prompt) -> None:
    client = await start(run_workers=True)
    deadline = asyncio.get_running_loop().time() + 90
    while (await client.get("/readyz")).status != 200:  # the model loads
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    form = FormData()
    form.add_field("wait", "120")
    form.add_field("file", prompt.audio, filename="a.wav", content_type="audio/wav")
    response = await client.post("/api/v1/jobs", data=form)
    document = await response.json()
    assert response.status == 200 and document["status"] == "done"
    assert word_error_rate(prompt.text, document["transcript"]["text"]) <= 0.35
    _, samples = await scrape(client)
    assert value(samples, "callpipe_asr_jobs_total", dialect="native", state="done") == 1
    assert value(samples, "callpipe_asr_audio_seconds_total", model="tiny.en") == pytest.approx(document["audio_duration"], abs=0.1)
    assert value(samples, "callpipe_asr_real_time_factor_count", model="tiny.en") == 1
    assert 0 < value(samples, "callpipe_asr_real_time_factor_sum", model="tiny.en") < 5
    assert value(samples, "callpipe_asr_model_load_seconds", model="tiny.en") > 0
    assert value(samples, "callpipe_asr_workers") == Settings().jobs.workers  # the default pool size
    assert value(samples, "callpipe_asr_worker_busy_ratio") == 0  # idle again
    assert value(samples, "callpipe_asr_worker_busy_seconds_total") > 0
    assert label_values(samples, "callpipe_asr_jobs_total", "state") == {"done"}
