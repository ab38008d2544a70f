"""Access control: named keys, per-key limits and defaults, per-client limits, page login.

In-process apps (``create_app`` with ``run_workers=False`` unless a transcript is needed): every
limit acts before any recognition, so jobs can stay queued.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from typing import Any, Awaitable, Callable, Iterator

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from asr_testkit import Prompt
from callpipe_asr import logs
from callpipe_asr.access import TokenBuckets
from callpipe_asr.errors import AuthenticationFailed, PermissionDenied, RateLimited
from callpipe_asr.settings import Settings, load_settings
from callpipe_asr.web.app import create_app
from callpipe_asr.web.auth import InvalidKey, KeyRing
from callpipe_asr.web.scope import RequestScope, entered
from callpipe_asr.web.state import RUNTIME

KEY = "key-voicemail-0123456789"
OTHER_KEY = "key-other-9876543210"
WRONG_KEY = "key-wrong-5555555555"

Start = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start(aiohttp_client: Callable[..., Awaitable[TestClient]], make_settings: Callable[..., Settings]) -> Start:
    """``await start(keys={...}, run_workers=False, **overrides)``: the whole app, started."""

    async def build(*, keys: dict[str, dict[str, Any]] | None = None, run_workers: bool = False, **overrides: Any) -> TestClient:
        if keys is not None:
            overrides["auth__keys"] = keys
        return await aiohttp_client(create_app(make_settings(**overrides), run_workers=run_workers))

    return build


# --- the key ring ------------------------------------------------------------------------------


def test_key_ring_names_keys_and_keeps_the_older_unnamed_list() -> None:
    settings = load_settings(None, environ={}, overrides={"auth.keys": {"voicemail": {"key": KEY}}, "auth.api_keys": [OTHER_KEY]})
    ring = KeyRing(settings.auth)
    assert ring.enabled
    voicemail, legacy = ring.identify(KEY), ring.identify(OTHER_KEY)
    assert voicemail is not None and voicemail.name == "voicemail"
    assert legacy is not None and legacy.name == "api_keys[1]"
    assert ring.owner(KEY) == voicemail.owner != legacy.owner
    assert KEY not in repr(voicemail)  # a policy carries no secret: it may be logged
    with pytest.raises(InvalidKey):
        ring.owner(WRONG_KEY)
    with pytest.raises(AuthenticationFailed):
        ring.owner(None)
    assert KeyRing(load_settings(None, environ={}).auth).owner(None) is None  # no keys: nothing to check


def test_a_key_changed_in_the_config_is_no_longer_found_by_name() -> None:
    before = KeyRing(load_settings(None, environ={}, overrides={"auth.keys": {"voicemail": {"key": KEY}}}).auth)
    after = KeyRing(load_settings(None, environ={}, overrides={"auth.keys": {"voicemail": {"key": OTHER_KEY}}}).auth)
    policy = before.identify(KEY)
    assert policy is not None
    assert before.by_name("voicemail", policy.owner) == policy
    assert after.by_name("voicemail", policy.owner) is None


def test_token_buckets_allow_a_burst_then_say_how_long_to_wait() -> None:
    now = [1000.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    assert [buckets.take("a", 3) for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a", 3) == pytest.approx(20.0)  # 3 a minute: one comes back every 20 s
    assert buckets.take("b", 3) == 0  # names are apart
    now[0] += 20
    assert buckets.take("a", 3) == 0
    assert buckets.take("a", 0) == 0  # 0: no limit


def test_the_rate_limit_counts_a_request_once_however_often_its_dialect_asks() -> None:
    ring = KeyRing(load_settings(None, environ={}, overrides={"auth.keys": {"v": {"key": KEY, "rate_limit_per_minute": 2}}}).auth)
    for _ in range(2):
        with entered(RequestScope("r", "openai", "192.0.2.1")):
            for _ in range(3):  # a handler that checks the key three times
                ring.owner(KEY)
    with entered(RequestScope("r", "openai", "192.0.2.1")), pytest.raises(RateLimited) as caught:
        ring.owner(KEY)
    assert caught.value.retry_after_seconds == 30


# --- limits in each dialect's own words --------------------------------------------------------

BASIC = "Basic " + base64.b64encode(f"apikey:{KEY}".encode()).decode()
CALLS: dict[str, tuple[str, str, dict[str, str]]] = {
    "native": ("GET", "/api/v1/jobs/nope", {"Authorization": f"Bearer {KEY}"}),
    "openai": ("GET", "/v1/models", {"Authorization": f"Bearer {KEY}"}),
    "watson": ("GET", "/watson/v1/recognitions", {"Authorization": BASIC}),
    "google": ("GET", "/v1/operations", {"x-goog-api-key": KEY}),
    "assemblyai": ("GET", "/v2/transcript", {"Authorization": KEY}),
    "fusionpbx": ("POST", "/enqueue", {"Authorization": f"Bearer {KEY}"}),
    "deepgram": ("POST", "/v1/listen", {"Authorization": f"Token {KEY}"}),
    "azure": ("POST", "/sts/v1.0/issueToken", {"Ocp-Apim-Subscription-Key": KEY}),
    "page": ("GET", "/transcripts/nope.txt", {"Authorization": f"Bearer {KEY}"}),
}
"""One request per dialect that presents KEY in that dialect's style (a body-less POST is the
dialect's own 4xx once the key passed)."""


async def _shape(dialect: str, response: Any) -> str:
    """The part of an error answer that only this dialect writes that way."""
    if dialect in ("fusionpbx",):
        return await response.text()
    if dialect == "page":
        return "text" if response.content_type == "text/plain" else "?"
    body = await response.json()
    return {
        "native": lambda: body["error"]["code"],
        "openai": lambda: body["error"]["type"],
        "watson": lambda: body["code_description"],
        "google": lambda: body["error"]["status"],
        "assemblyai": lambda: "error" if isinstance(body["error"], str) else "?",
        "deepgram": lambda: body["err_code"],
        "azure": lambda: body["error"]["code"],
    }[dialect]()


RATE_SHAPES = {
    "native": "rate_limited", "openai": "rate_limit_exceeded", "watson": "Too Many Requests",
    "google": "RESOURCE_EXHAUSTED", "assemblyai": "error", "fusionpbx": "", "deepgram": "TOO_MANY_REQUESTS",
    "azure": "429", "page": "text",
}


@pytest.mark.parametrize("dialect", sorted(CALLS))
async def test_a_key_over_its_rate_gets_its_dialects_own_429_with_retry_after(start: Start, dialect: str) -> None:
    client = await start(keys={"pbx": {"key": KEY, "rate_limit_per_minute": 1}})
    method, path, headers = CALLS[dialect]
    first = await client.request(method, path, headers=headers)
    assert first.status not in (401, 403, 429)
    second = await client.request(method, path, headers=headers)
    assert second.status == 429
    assert second.headers["Retry-After"] == "60"
    assert await _shape(dialect, second) == RATE_SHAPES[dialect]


FORBIDDEN_SHAPES = {
    "openai": "invalid_request_error", "watson": "Forbidden", "google": "PERMISSION_DENIED", "assemblyai": "error",
    "fusionpbx": "", "deepgram": "INSUFFICIENT_PERMISSIONS", "azure": "403", "page": "text",
}


@pytest.mark.parametrize("dialect", sorted(FORBIDDEN_SHAPES))
async def test_a_dialect_the_key_may_not_use_answers_its_own_403(start: Start, dialect: str) -> None:
    client = await start(keys={"native-only": {"key": KEY, "allowed_dialects": ["native"]}})
    method, path, headers = CALLS[dialect]
    refused = await client.request(method, path, headers=headers)
    assert refused.status == 403
    assert await _shape(dialect, refused) == FORBIDDEN_SHAPES[dialect]
    method, path, headers = CALLS["native"]
    assert (await client.request(method, path, headers=headers)).status == 404  # allowed: the job is unknown


async def test_concurrent_job_limit_refuses_new_jobs_but_lets_a_retry_attach(start: Start, prompts: dict[str, Prompt]) -> None:
    client = await start(keys={"pbx": {"key": KEY, "max_concurrent_jobs": 1}, "other": {"key": OTHER_KEY}})
    first_audio, second_audio = prompts["agent-alreadyon"].audio, prompts["agent-loggedoff"].audio

    async def submit(audio: bytes, key: str = KEY) -> Any:
        form = FormData()
        form.add_field("file", audio, filename="a.wav", content_type="audio/wav")
        return await client.post("/api/v1/jobs", data=form, headers={"Authorization": f"Bearer {key}"})

    accepted = await submit(first_audio)
    assert accepted.status == 202
    refused = await submit(second_audio)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == "too_many_jobs"
    retry = await submit(first_audio)  # the same request again attaches to its job
    assert retry.status == 202 and (await retry.json())["id"] == (await accepted.json())["id"]
    assert (await submit(second_audio, OTHER_KEY)).status == 202  # another key has its own count
    stats = await client.app[RUNTIME].service.stats()
    assert stats.queued == 2  # the refused job was taken back


async def test_another_keys_job_is_as_unknown_as_a_missing_one(start: Start, prompt: Prompt) -> None:
    """Each key sees only its own jobs: the native API (read, delete) and FusionPBX's poll answer
    another key's job id exactly as they answer an unknown one, and the delete leaves the job be.
    (The pages: ``test_page_uploads_need_the_forms_csrf_token_and_stay_with_their_key``; Watson,
    Google and AssemblyAI: their provider tests.)"""
    client = await start(keys={"voicemail": {"key": KEY}, "other": {"key": OTHER_KEY}})
    mine, theirs = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {OTHER_KEY}"}
    form = FormData()
    form.add_field("file", prompt.audio, filename="a.wav", content_type="audio/wav")
    created = await client.post("/api/v1/jobs", data=form, headers=mine)
    assert created.status == 202
    job_id = (await created.json())["id"]

    for method in ("GET", "DELETE"):
        foreign = await client.request(method, f"/api/v1/jobs/{job_id}", headers=theirs)
        unknown = await client.request(method, "/api/v1/jobs/no-such-job", headers=theirs)
        assert foreign.status == unknown.status == 404
        assert (await foreign.json())["error"]["code"] == (await unknown.json())["error"]["code"] == "not_found"
    foreign_poll = await client.get(f"/j/{job_id}", headers=theirs)
    unknown_poll = await client.get("/j/no-such-job", headers=theirs)
    assert (foreign_poll.status, await foreign_poll.json()) == (unknown_poll.status, await unknown_poll.json())

    own = await client.get(f"/api/v1/jobs/{job_id}", headers=mine)
    assert own.status == 200 and (await own.json())["status"] == "queued", "another key's delete left it alone"
    own_poll = await client.get(f"/j/{job_id}", headers=mine)
    assert own_poll.status == 200 and (await own_poll.json())["status"] != (await unknown_poll.json())["status"]
    assert (await client.delete(f"/api/v1/jobs/{job_id}", headers=mine)).status == 204


async def test_key_defaults_fill_the_language_and_model_a_request_leaves_open(start: Start, prompt: Prompt) -> None:
    models = {"tiny.en": {}, "careful": {"beam_size": 2}}
    client = await start(keys={"pbx": {"key": KEY, "language": "en", "model": "careful"}, "plain": {"key": OTHER_KEY}},
                         models=models)
    service = client.app[RUNTIME].service

    async def options(path: str, key: str, **fields: str) -> dict[str, Any]:
        form = FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        form.add_field("file", prompt.audio, filename="a.wav", content_type="audio/wav")
        response = await client.post(path, data=form, headers={"Authorization": f"Bearer {key}"})
        assert response.status in (201, 202), await response.text()
        job = await service.get((await response.json())["id"])
        return job.options.to_dict()

    fusionpbx = await options("/enqueue", KEY, model="whisper-1")  # what FusionPBX's local engine sends
    assert (fusionpbx["model"], fusionpbx["language"]) == ("careful", "en")
    named = await options("/api/v1/jobs", KEY, model="tiny.en", prompt="a")  # a configured model is kept
    assert (named["model"], named["language"]) == ("tiny.en", "en")
    plain = await options("/api/v1/jobs", OTHER_KEY)
    assert plain["model"] != "careful" and plain["language"] is None  # a key without defaults


async def test_wrong_keys_are_limited_per_client_as_a_trusted_proxy_names_it(start: Start) -> None:
    keys = {"pbx": {"key": KEY}}
    client = await start(keys=keys, auth__max_failed_attempts_per_minute=2, server__trusted_proxies=["127.0.0.1/32"])

    async def models(key: str, client_address: str) -> Any:
        return await client.get("/v1/models", headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": client_address})

    assert [(await models(WRONG_KEY, "203.0.113.7")).status for _ in range(2)] == [401, 401]
    blocked = await models(KEY, "203.0.113.7")  # even the right key, while it keeps guessing
    assert blocked.status == 429 and int(blocked.headers["Retry-After"]) >= 1
    assert (await models(KEY, "198.51.100.9")).status == 200  # another client behind the proxy

    untrusting = await start(keys=keys, auth__max_failed_attempts_per_minute=2)  # the header is not believed
    for address in ("203.0.113.7", "198.51.100.9"):
        await untrusting.get("/v1/models", headers={"Authorization": f"Bearer {WRONG_KEY}", "X-Forwarded-For": address})
    other = await untrusting.get("/v1/models", headers={"Authorization": f"Bearer {KEY}", "X-Forwarded-For": "192.0.2.50"})
    assert other.status == 429  # one peer, one client, whatever the header says


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The process's logs as ``--log-format json --log-level debug`` writes them, captured."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("aiohttp.access").level)
    stream = io.StringIO()
    logs.configure("debug", "json", stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("aiohttp.access").setLevel(saved[2])


async def test_logs_name_keys_but_never_show_them(start: Start, json_log: io.StringIO) -> None:
    client = await start(keys={"voicemail": {"key": KEY}})
    await client.get(f"/v1/operations?key={KEY}")  # Google's key in the query string
    await client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    await client.get("/v1/models", headers={"Authorization": f"Bearer {WRONG_KEY}"})
    await client.get(f"/v1/operations?key={WRONG_KEY}")
    text = json_log.getvalue()
    assert KEY not in text and WRONG_KEY not in text
    lines = [json.loads(line) for line in text.splitlines()]
    requests = [line for line in lines if line["logger"] == "callpipe_asr.web.access"]
    assert [(r["message"], r.get("key")) for r in requests] == [
        ("GET /v1/operations", "voicemail"),
        ("GET /v1/models", "voicemail"),
        ("GET /v1/models", None),
        ("GET /v1/operations", None),
    ]
    assert [r["status"] for r in requests[1:]] == [200, 401, 400]  # Google answers a wrong key with 400
    assert all(re.fullmatch(r"[0-9a-f]{16}", r["request_id"]) for r in requests)
    assert requests[2]["denied"] == "invalid_key"


# --- the pages ---------------------------------------------------------------------------------


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert found, f"no hidden {name} in the form"
    return found.group(1)


def _set_cookie(response: Any, name: str) -> str:
    headers = [value for value in response.headers.getall("Set-Cookie", []) if value.startswith(name + "=")]
    assert headers, f"no {name} cookie set"
    return headers[-1]


async def _log_in(client: TestClient, key: str) -> Any:
    form = await client.get("/login")
    html = await form.text()
    return await client.post(
        "/login", data={"key": key, "csrf_token": _hidden(html, "csrf_token"), "next": "/"}, allow_redirects=False
    )


async def test_pages_ask_for_a_key_and_keep_it_in_a_strict_http_only_cookie(start: Start) -> None:
    client = await start(keys={"voicemail": {"key": KEY}})
    html = {"Accept": "text/html"}
    first = await client.get("/", headers=html, allow_redirects=False)
    assert first.status == 303 and first.headers["Location"] == "/login?next=/"
    form = await client.get("/login", headers=html)
    login_cookie = _set_cookie(form, "callpipe_login")
    assert "HttpOnly" in login_cookie and "SameSite=Strict" in login_cookie

    wrong = await _log_in(client, WRONG_KEY)
    assert wrong.status == 401 and "not valid" in await wrong.text()
    forged = await client.post("/login", data={"key": KEY, "csrf_token": "0" * 32}, allow_redirects=False)
    assert forged.status == 403  # a login form another site posted has no matching token

    logged_in = await _log_in(client, KEY)
    assert logged_in.status == 303 and logged_in.headers["Location"] == "/"
    session = _set_cookie(logged_in, "callpipe_session")
    assert "HttpOnly" in session and "SameSite=Strict" in session and KEY not in session
    page = await client.get("/", headers=html)
    body = await page.text()
    assert page.status == 200 and "voicemail" in body and 'action="/logout"' in body
    assert _hidden(body, "csrf_token")

    out = await client.post("/logout", data={"csrf_token": _hidden(body, "csrf_token")}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/login"
    assert (await client.get("/", headers=html, allow_redirects=False)).status == 303


async def test_page_uploads_need_the_forms_csrf_token_and_stay_with_their_key(start: Start, prompt: Prompt) -> None:
    client = await start(keys={"voicemail": {"key": KEY}, "other": {"key": OTHER_KEY}})
    assert (await _log_in(client, KEY)).status == 303
    token = _hidden(await (await client.get("/", headers={"Accept": "text/html"})).text(), "csrf_token")

    def upload(with_token: str | None) -> FormData:
        form = FormData()
        if with_token:
            form.add_field("csrf_token", with_token)
        form.add_field("file", prompt.audio, filename="a.wav", content_type="audio/wav")
        return form

    refused = await client.post("/", data=upload(None), allow_redirects=False)
    assert refused.status == 403 and "out of date" in await refused.text()
    accepted = await client.post("/", data=upload(token), allow_redirects=False)
    assert accepted.status == 303
    location = accepted.headers["Location"]
    assert (await client.get(location, headers={"Accept": "text/html"})).status == 200

    own = await client.get(location + ".json", headers={"Authorization": f"Bearer {KEY}"})
    assert own.status == 200  # scripts use the key itself
    foreign = await client.get(location + ".txt", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert foreign.status == 404  # another key's transcript is as unknown as a missing one
    client.session.cookie_jar.clear()
    anonymous = await client.get(location + ".txt")
    assert anonymous.status == 401 and anonymous.content_type == "text/plain"


async def test_a_forged_or_stale_session_cookie_is_refused(start: Start) -> None:
    client = await start(keys={"voicemail": {"key": KEY}})
    session = _set_cookie(await _log_in(client, KEY), "callpipe_session").split(";")[0].split("=", 1)[1]
    name, owner, expires, signature = session.split(".")
    tampered = f"{name}.{owner}.{int(expires) + 3600}.{signature}"
    other_app = await start(keys={"voicemail": {"key": KEY}})  # another secret signs there
    for target, cookie in ((client, tampered), (other_app, session)):
        target.session.cookie_jar.clear()
        response = await target.get("/", headers={"Accept": "text/html", "Cookie": f"callpipe_session={cookie}"},
                                    allow_redirects=False)
        assert response.status == 303


async def test_health_readiness_and_the_api_document_stay_open_with_keys(start: Start) -> None:
    client = await start(keys={"voicemail": {"key": KEY}})
    for path in ("/healthz", "/readyz", "/openapi.json", "/static/style.css"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/api/v1/jobs/nope")).status == 401


def test_errors_raised_for_access_are_the_dialects_existing_families() -> None:
    """Every dialect already renders these: QueueFull (429 + Retry-After) and PermissionDenied."""
    from callpipe_asr.errors import QueueFull, TooManyJobs

    assert issubclass(RateLimited, QueueFull) and issubclass(TooManyJobs, QueueFull)
    assert PermissionDenied.status == 403


async def test_an_azure_token_carries_its_keys_rate_limit(start: Start) -> None:
    client = await start(keys={"azure": {"key": KEY, "rate_limit_per_minute": 2}})
    issued = await client.post("/sts/v1.0/issueToken", headers={"Ocp-Apim-Subscription-Key": KEY})
    assert issued.status == 200
    token = {"Authorization": f"Bearer {await issued.text()}"}
    path = "/speech/recognition/conversation/cognitiveservices/v1"
    assert (await client.post(path, headers=token)).status == 400  # admitted: an empty body
    refused = await client.post(path, headers=token)
    assert refused.status == 429 and refused.headers["Retry-After"] == "30"


async def test_the_login_form_refuses_a_large_body_before_reading_it(start: Start) -> None:
    client = await start(keys={"voicemail": {"key": KEY}})
    response = await client.post("/login", data={"key": "x" * 20_000})
    assert response.status == 413
