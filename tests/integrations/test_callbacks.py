"""Result callbacks: jobs ended through the real SQLite store, delivered by the dispatcher to a
real receiving aiohttp server on 127.0.0.1 that records every post.

The receiver is on loopback, so these tests turn ``allow_private_addresses`` on to reach it
(one test turns it off to see the send-time address check refuse it). Backoff and polling use
tiny constructor values so retries take tenths of a second.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from callpipe_asr.errors import InvalidRequest, RemoteAccessDenied, RemoteRequestFailed
from callpipe_asr.integrations.callbacks import (
    CallbackDispatcher,
    Renderer,
    check_callback_url,
    load_callback_renderers,
    verify_callback_challenge,
    watson_signature,
)
from callpipe_asr.jobs import Job, JobRequest
from callpipe_asr.jobs.sqlite_store import SQLiteJobStore
from callpipe_asr.settings import JobSettings, ProviderSettings, Settings
from callpipe_asr.transcript import RecognitionOptions, Segment, Transcript
from callpipe_asr.web.app import create_app

POLL_SECONDS = 0.02
BACKOFF_SECONDS = 0.1
SECRET = "ThisIsMySecret"
TRANSCRIPT = Transcript(segments=(Segment(" Hello from the test.", 0.0, 1.5),), language="en", duration=1.5)


def callback_settings(**changes: Any) -> ProviderSettings:
    """Callbacks on, the loopback receiver allowed (private addresses too: it is on 127.0.0.1),
    three attempts, a short time limit; ``changes`` override any of it."""
    values: dict[str, Any] = {
        "allow_callbacks": True,
        "allowed_hosts": ("127.0.0.1",),
        "allow_private_addresses": True,
        "remote_timeout_seconds": 2.0,
        "callback_attempts": 3,
    }
    values.update(changes)
    return ProviderSettings(**values)


@dataclass
class Post:
    at: float
    """time.monotonic() when it arrived."""
    body: bytes
    headers: Mapping[str, str]


@dataclass
class Receiver:
    """The client's callback endpoint: records posts and answers each with the next scripted
    status (200 once the script runs out)."""

    statuses: collections.deque[int] = field(default_factory=collections.deque)
    posts: list[Post] = field(default_factory=list)
    challenges: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)
    """(challenge_string, headers) of each registration check."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        app.router.add_get("/hook", self.echo_challenge)
        app.router.add_get("/wrong-echo", self.wrong_echo)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        self.posts.append(Post(time.monotonic(), await request.read(), dict(request.headers)))
        status = self.statuses.popleft() if self.statuses else 200
        return web.Response(status=status, text="ok" if status == 200 else "try later")

    async def echo_challenge(self, request: web.Request) -> web.Response:
        challenge = request.query["challenge_string"]
        self.challenges.append((challenge, dict(request.headers)))
        return web.Response(text=challenge)  # text/plain

    async def wrong_echo(self, request: web.Request) -> web.Response:
        return web.Response(text="not the challenge")


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Any]) -> AsyncIterator[tuple[Receiver, str]]:
    """The receiver and its base URL, ``http://127.0.0.1:<port>``."""
    hooks = Receiver()
    server: TestServer = await aiohttp_server(hooks.app())
    yield hooks, f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    opened = SQLiteJobStore(tmp_path / "jobs.sqlite3", JobSettings())
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def dispatchers() -> AsyncIterator[Callable[..., CallbackDispatcher]]:
    """``make(store, settings, renderers)``: a started dispatcher with tiny poll and backoff,
    stopped at teardown."""
    started: list[CallbackDispatcher] = []

    def make(store: SQLiteJobStore, settings: ProviderSettings, renderers: Mapping[str, Renderer]) -> CallbackDispatcher:
        dispatcher = CallbackDispatcher(
            store, settings, renderers, poll_interval_seconds=POLL_SECONDS, backoff_base_seconds=BACKOFF_SECONDS
        )
        started.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in started:
        await dispatcher.stop()


async def end_job(store: SQLiteJobStore, callback_url: str, dialect: str = "watson", audio: bytes = b"audio") -> Job:
    """Submit, claim and finish a job as a dialect and a worker would; the store then marks its
    callback pending."""
    request = JobRequest(audio=audio, options=RecognitionOptions(), dialect=dialect, callback_url=callback_url,
                         metadata={"user_token": "call-42"})
    job, created = await store.submit(request)
    assert created
    claimed = await store.claim()
    assert claimed is not None and claimed.job.id == job.id
    assert await store.finish(job.id, claimed.token, TRANSCRIPT)
    ended = await store.get(job.id)
    assert ended is not None and ended.callback_status == "pending"
    return ended


async def settled(store: SQLiteJobStore, job_id: str, timeout: float = 10.0) -> Job:
    """The job once its callback is delivered or failed."""
    deadline = time.monotonic() + timeout
    while True:
        job = await store.get(job_id)
        assert job is not None
        if job.callback_status in ("delivered", "failed"):
            return job
        assert time.monotonic() < deadline, f"callback still {job.callback_status} after {timeout} s"
        await asyncio.sleep(POLL_SECONDS)


def watson_like(job: Job) -> tuple[bytes, dict[str, str]]:
    """A dialect renderer as the Watson module will write one: its body, signed."""
    body = json.dumps({"id": job.id, "event": "recognitions.completed", "user_token": job.metadata["user_token"]}).encode()
    return body, {"X-Callback-Signature": watson_signature(body, SECRET)}


# -- delivery ----------------------------------------------------------------------------------------


async def test_an_ended_job_is_delivered_once_with_the_renderers_body_and_headers(
    store: SQLiteJobStore, receiver: Any, dispatchers: Any
) -> None:
    hooks, base = receiver
    job = await end_job(store, f"{base}/hook")
    await dispatchers(store, callback_settings(), {"watson": watson_like}).start()

    assert (await settled(store, job.id)).callback_status == "delivered"
    await asyncio.sleep(10 * POLL_SECONDS)  # time enough for a duplicate, were there one
    assert len(hooks.posts) == 1
    post = hooks.posts[0]
    assert json.loads(post.body) == {"id": job.id, "event": "recognitions.completed", "user_token": "call-42"}
    assert post.headers["X-Callback-Signature"] == watson_signature(post.body, SECRET)
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["User-Agent"].startswith("callpipe-asr/")
    assert await store.callback_attempts(job.id) == 1


async def test_a_dialect_without_a_renderer_gets_the_native_job_document(
    store: SQLiteJobStore, receiver: Any, dispatchers: Any
) -> None:
    hooks, base = receiver
    job = await end_job(store, f"{base}/hook", dialect="native")
    await dispatchers(store, callback_settings(), {"watson": watson_like}).start()

    assert (await settled(store, job.id)).callback_status == "delivered"
    document = json.loads(hooks.posts[0].body)
    assert document["id"] == job.id and document["status"] == "done"
    assert document["transcript"]["text"] == "Hello from the test."
    assert "X-Callback-Signature" not in hooks.posts[0].headers


async def test_a_receiver_failing_twice_is_retried_with_backoff_then_delivered(
    store: SQLiteJobStore, receiver: Any, dispatchers: Any
) -> None:
    hooks, base = receiver
    hooks.statuses.extend([500, 500])
    job = await end_job(store, f"{base}/hook")
    await dispatchers(store, callback_settings(callback_attempts=3), {"watson": watson_like}).start()

    assert (await settled(store, job.id)).callback_status == "delivered"
    assert len(hooks.posts) == 3
    assert await store.callback_attempts(job.id) == 3
    first_gap = hooks.posts[1].at - hooks.posts[0].at
    second_gap = hooks.posts[2].at - hooks.posts[1].at
    assert first_gap >= BACKOFF_SECONDS * 0.9
    assert second_gap >= 2 * BACKOFF_SECONDS * 0.9  # exponential: twice the first wait


async def test_a_receiver_always_failing_ends_failed_after_the_configured_attempts(
    store: SQLiteJobStore, receiver: Any, dispatchers: Any
) -> None:
    hooks, base = receiver
    hooks.statuses.extend([503] * 10)
    job = await end_job(store, f"{base}/hook")
    await dispatchers(store, callback_settings(callback_attempts=3), {"watson": watson_like}).start()

    assert (await settled(store, job.id)).callback_status == "failed"
    await asyncio.sleep(4 * BACKOFF_SECONDS)
    assert len(hooks.posts) == 3
    assert await store.callback_attempts(job.id) == 3


async def test_the_address_is_checked_again_when_sending(store: SQLiteJobStore, receiver: Any, dispatchers: Any) -> None:
    """A URL accepted earlier (another config, or DNS that has since changed) is refused at send
    time, for good: no post, one attempt, failed."""
    hooks, base = receiver
    job = await end_job(store, f"{base}/hook")
    await dispatchers(store, callback_settings(allow_private_addresses=False), {"watson": watson_like}).start()

    assert (await settled(store, job.id)).callback_status == "failed"
    assert hooks.posts == []
    assert await store.callback_attempts(job.id) == 1


async def test_a_failing_renderer_does_not_stop_other_deliveries(
    store: SQLiteJobStore, receiver: Any, dispatchers: Any
) -> None:
    hooks, base = receiver

    def broken(job: Job) -> tuple[bytes, dict[str, str]]:
        raise KeyError("a renderer bug")

    bad = await end_job(store, f"{base}/hook", dialect="broken", audio=b"first")
    good = await end_job(store, f"{base}/hook", dialect="watson", audio=b"second")
    await dispatchers(store, callback_settings(callback_attempts=2), {"broken": broken, "watson": watson_like}).start()

    assert (await settled(store, good.id)).callback_status == "delivered"
    assert (await settled(store, bad.id)).callback_status == "failed"
    assert await store.callback_attempts(bad.id) == 2
    assert [json.loads(p.body)["id"] for p in hooks.posts] == [good.id]


async def test_the_app_delivers_callbacks_of_jobs_ended_by_another_process(
    receiver: Any, make_settings: Callable[..., Settings], aiohttp_client: Callable[..., Any]
) -> None:
    """The dispatcher runs in the app's cleanup context: a job ended through a second store on
    the same database (a worker elsewhere) is delivered by the app."""
    hooks, base = receiver
    settings = make_settings(
        jobs__poll_interval_seconds=POLL_SECONDS,
        providers__allow_callbacks=True,
        providers__allowed_hosts=["127.0.0.1"],
        providers__allow_private_addresses=True,
    )
    await aiohttp_client(create_app(settings, run_workers=False))  # starts the app's cleanup context
    worker_store = SQLiteJobStore(settings.database_path, settings.jobs)
    await worker_store.open()
    try:
        job = await end_job(worker_store, f"{base}/hook", dialect="native")
        assert (await settled(worker_store, job.id)).callback_status == "delivered"
    finally:
        await worker_store.close()
    assert json.loads(hooks.posts[0].body)["id"] == job.id


# -- accepting a URL ------------------------------------------------------------------------------------


def test_check_callback_url_accepts_allowed_urls() -> None:
    settings = callback_settings(allowed_hosts=("*.example.com",))
    assert check_callback_url("https://hooks.example.com/stt?job=1", settings) == "https://hooks.example.com/stt?job=1"


@pytest.mark.parametrize(
    ("url", "settings", "error", "message"),
    [
        ("https://hooks.example.com/stt", ProviderSettings(allowed_hosts=("hooks.example.com",)), RemoteAccessDenied, "allow_callbacks"),
        ("https://evil.example.net/stt", callback_settings(allowed_hosts=("hooks.example.com",)), RemoteAccessDenied, "allowed_hosts"),
        ("ftp://127.0.0.1/stt", callback_settings(), InvalidRequest, "'ftp://'"),
        ("gs://bucket/stt", callback_settings(), InvalidRequest, "gs://"),
    ],
)
def test_check_callback_url_refuses(url: str, settings: ProviderSettings, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_callback_url(url, settings)


# -- Watson's registration challenge ------------------------------------------------------------------


@pytest.mark.parametrize("secret", [SECRET, None])
async def test_the_challenge_is_echoed_and_signed_when_a_secret_is_given(receiver: Any, secret: str | None) -> None:
    hooks, base = receiver
    await verify_callback_challenge(f"{base}/hook", secret, callback_settings())
    ((challenge, headers),) = hooks.challenges
    assert len(challenge) >= 32
    if secret is None:
        assert "X-Callback-Signature" not in headers
    else:
        # What a Watson receiver checks: base64(HMAC-SHA1(user_secret, challenge_string)).
        assert headers["X-Callback-Signature"] == watson_signature(challenge.encode(), SECRET)


def test_watson_signature_is_base64_of_hmac_sha1() -> None:
    # The published HMAC-SHA1 test vector (key "key"), base64-encoded as Watson sends it.
    digest = bytes.fromhex("de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9")
    assert watson_signature(b"The quick brown fox jumps over the lazy dog", "key") == base64.b64encode(digest).decode()


async def test_a_wrong_echo_fails_registration(receiver: Any) -> None:
    hooks, base = receiver
    with pytest.raises(InvalidRequest, match="did not echo the challenge_string"):
        await verify_callback_challenge(f"{base}/wrong-echo", None, callback_settings())


async def test_a_challenge_answered_with_an_error_fails_registration(receiver: Any) -> None:
    hooks, base = receiver
    with pytest.raises(InvalidRequest, match="HTTP 404"):
        await verify_callback_challenge(f"{base}/nowhere", None, callback_settings())


async def test_the_challenge_is_refused_for_loopback_when_private_addresses_are_off(receiver: Any) -> None:
    hooks, base = receiver
    with pytest.raises(RemoteAccessDenied, match="loopback"):
        await verify_callback_challenge(f"{base}/hook", None, callback_settings(allow_private_addresses=False))
    assert hooks.challenges == []


async def test_an_unreachable_challenge_url_is_a_remote_failure(receiver: Any, aiohttp_server: Callable[..., Any]) -> None:
    server: TestServer = await aiohttp_server(web.Application())
    port = server.port
    await server.close()
    with pytest.raises(RemoteRequestFailed):
        await verify_callback_challenge(f"http://127.0.0.1:{port}/hook", None, callback_settings())


# -- finding the dialects' renderers -------------------------------------------------------------------


def test_renderers_come_from_provider_modules_that_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fake_providers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "signs.py").write_text("def callback_payload(job):\n    return b'{}', {}\n")
    (package / "silent.py").write_text("VALUE = 1\n")
    (package / "broken.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_providers", raising=False)

    renderers = load_callback_renderers(("signs", "silent", "not_written_yet"), package="fake_providers")
    assert list(renderers) == ["signs"]
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed"):
        load_callback_renderers(("broken",), package="fake_providers")
