"""Result callbacks: when a job with a ``callback_url`` ends, POST its result there.

Off unless ``providers.allow_callbacks``. Dialects check a client's URL with
:func:`check_callback_url` when the job is submitted and store it on the job; the store marks the
callback ``pending`` (due at once) when the job ends. :class:`CallbackDispatcher`, a background
task of the app, then delivers it in the job's dialect:

- each dialect module may define ``callback_payload(job) -> (body, headers)``: the bytes to post
  and the extra headers, signatures included (Watson signs with ``X-Callback-Signature``,
  :func:`watson_signature`; AssemblyAI adds its custom auth header; Deepgram posts its
  synchronous response). A dialect without one gets the native job document as JSON;
- the address is checked again at send time (DNS may have changed since the job was accepted);
- a 2xx answer is delivered; anything else is retried with exponential backoff until
  ``providers.callback_attempts`` tries, then the callback is ``failed``. Redirects are not
  followed: a callback that moved is a failed attempt.

Delivery is at least once: the outcome is written after the POST, so a process stopped between
the two posts again after its restart. Receivers de-duplicate by job id, as with every provider.

:func:`verify_callback_challenge` is Watson's ``register_callback`` check of a URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import importlib
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from multidict import CIMultiDict
from yarl import URL

from ..aio import cancel_and_wait
from ..errors import CallpipeError, InvalidRequest, RemoteAccessDenied, RemoteRequestFailed, StoreBusy, StoreUnavailable
from ..jobs import Job, JobProgress
from ..jobs.store import JobStore
from ..providers.native import job_document
from ..settings import ProviderSettings
from .outbound import check_outbound_url, send_guarded

log = logging.getLogger(__name__)

Renderer = Callable[[Job], tuple[bytes, dict[str, str]]]
"""A dialect's ``callback_payload``: the body to post for an ended job and its extra headers."""

PROVIDER_PACKAGE = "callpipe_asr.providers"
CALLBACK_DIALECTS = ("watson", "deepgram", "assemblyai")
"""Provider modules that may define ``callback_payload``; the module name is the job's dialect."""
WHAT = "the callback URL"
RESPONSE_BYTES_READ = 4096
"""Bytes of a receiver's answer read (for the log); a callback needs only its status."""
WATSON_CHALLENGE_TIMEOUT_SECONDS = 5.0
"""Watson's registration gives the URL 5 s to echo the challenge."""
CHALLENGE_BYTES = 24


def check_callback_url(url: str, settings: ProviderSettings) -> str:
    """The URL, normalized, if callbacks are on and it is http(s) to an allowed host.

    Like :func:`~.remote_audio.check_remote_url`: :class:`InvalidRequest` for a bad URL or
    scheme, :class:`RemoteAccessDenied` when the config does not allow it; its addresses are
    checked each time a callback is sent.
    """
    parsed = check_outbound_url(url, settings, WHAT)
    if not settings.allow_callbacks:
        raise RemoteAccessDenied(
            "this server does not post results to URLs (providers.allow_callbacks is off); poll for the result"
        )
    return str(parsed)


def watson_signature(payload: bytes, user_secret: str) -> str:
    """Watson's ``X-Callback-Signature``: base64 of the HMAC-SHA1 of ``payload`` keyed with the
    user secret (the notification body, or the challenge string on registration)."""
    digest = hmac.new(user_secret.encode("utf-8"), payload, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


async def verify_callback_challenge(url: str, user_secret: str | None, settings: ProviderSettings) -> None:
    """Watson's ``register_callback`` check: GET ``url?challenge_string=X`` and expect ``X`` back
    within 5 s (signed with ``X-Callback-Signature`` when a user secret is given).

    Raises :class:`RemoteAccessDenied`/:class:`InvalidRequest` as :func:`check_callback_url`
    does, and :class:`InvalidRequest` (:class:`RemoteRequestFailed` when unreachable) when the
    URL does not echo the challenge. The answer's Content-Type is not checked: Watson asks for
    text/plain, but common receivers (Express's ``res.send``) answer text/html and work with it.
    """
    target = URL(check_callback_url(url, settings))
    challenge = secrets.token_urlsafe(CHALLENGE_BYTES)
    headers = {"Accept": "text/plain"}
    if user_secret:
        headers["X-Callback-Signature"] = watson_signature(challenge.encode("utf-8"), user_secret)
    response = await send_guarded(
        "GET",
        target.extend_query(challenge_string=challenge),
        settings,
        headers=headers,
        timeout_seconds=min(WATSON_CHALLENGE_TIMEOUT_SECONDS, settings.remote_timeout_seconds),
        max_response_bytes=len(challenge) + 64,
    )
    if not 200 <= response.status < 300:
        raise InvalidRequest(
            f"{WHAT} answered the challenge with HTTP {response.status} {response.reason}".rstrip()
            + f" (host '{target.raw_host}'); it must echo the challenge_string with 200 OK"
        )
    if response.body.strip() != challenge.encode("ascii"):
        raise InvalidRequest(f"{WHAT} did not echo the challenge_string (host '{target.raw_host}')")


def load_callback_renderers(
    dialects: Sequence[str] = CALLBACK_DIALECTS, package: str = PROVIDER_PACKAGE
) -> dict[str, Renderer]:
    """``dialect -> callback_payload`` for each provider module that defines one.

    A module that does not exist is skipped: the dialect modules are written apart from this one
    and arrive one by one; until a module exists its jobs cannot have callbacks anyway. A module
    that exists but fails to import (a missing dependency, a syntax error) raises, loudly.
    """
    renderers: dict[str, Renderer] = {}
    for dialect in dialects:
        name = f"{package}.{dialect}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            log.debug("no provider module %s; its jobs get the generic callback body", name)
            continue
        renderer = getattr(module, "callback_payload", None)
        if callable(renderer):
            renderers[dialect] = renderer
    return renderers


def generic_callback_payload(job: Job) -> tuple[bytes, dict[str, str]]:
    """The native API's job document as JSON, for a dialect that has no callback format."""
    document = job_document(JobProgress(job, None, None))
    return json.dumps(document).encode("utf-8"), {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Attempt:
    """How one delivery attempt went."""

    delivered: bool
    retryable: bool
    detail: str


class CallbackDispatcher:
    """Delivers due callbacks in the background (see the module docstring).

    Polls ``store.due_callbacks()`` every ``poll_interval_seconds`` (or at once after
    :meth:`wake`); sends up to ``max_concurrent`` callbacks at a time, so one slow receiver does
    not hold up the others; waits ``backoff_base_seconds * 2**(attempt - 1)`` (at most
    ``backoff_max_seconds``) before each retry. Nothing a receiver, a renderer or the store does
    ends the loop.
    """

    def __init__(
        self,
        store: JobStore,
        settings: ProviderSettings,
        renderers: Mapping[str, Renderer],
        *,
        poll_interval_seconds: float = 1.0,
        backoff_base_seconds: float = 10.0,
        backoff_max_seconds: float = 3600.0,
        max_concurrent: int = 8,
    ) -> None:
        self._store = store
        self._settings = settings
        self._renderers = dict(renderers)
        self._poll = poll_interval_seconds
        self._backoff_base = backoff_base_seconds
        self._backoff_max = backoff_max_seconds
        self._max_concurrent = max_concurrent
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="callback-dispatcher")

    async def stop(self) -> None:
        """Stop polling and cancel deliveries under way; those stay pending and are sent after
        the next start."""
        tasks = [t for t in (self._loop_task, *self._in_flight.values()) if t is not None]
        await cancel_and_wait(tasks)
        self._loop_task = None
        self._in_flight.clear()

    def wake(self) -> None:
        """Look for due callbacks now instead of at the next poll (a job just ended)."""
        self._wake.set()

    def backoff_seconds(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 = the first)."""
        return float(min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)))

    async def _run(self) -> None:
        while True:
            try:
                await self._dispatch_due()
            except (StoreBusy, StoreUnavailable) as exc:  # the store cannot answer for now; the next poll tries again
                log.warning("looking for due callbacks failed: %s", exc.message)
            except Exception:
                log.exception("looking for due callbacks failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()

    async def _dispatch_due(self) -> None:
        free = self._max_concurrent - len(self._in_flight)
        if free <= 0:
            return
        # In-flight callbacks are still pending in the store: ask for enough to see past them.
        for job in await self._store.due_callbacks(limit=self._max_concurrent):
            if free <= 0:
                break
            if job.id in self._in_flight:
                continue
            task = asyncio.create_task(self._deliver(job), name=f"callback-{job.id}")
            self._in_flight[job.id] = task
            task.add_done_callback(functools.partial(self._forget, job.id))
            free -= 1

    def _forget(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(job_id, None)

    async def _deliver(self, job: Job) -> None:
        """One attempt for one job, and its outcome recorded."""
        try:
            attempt_number = await self._store.callback_attempts(job.id) + 1
            attempt = await self._attempt(job)
            await self._record(job, attempt_number, attempt)
        except Exception:  # the store failed: the callback stays pending and is tried again
            log.exception("callback of job %s: recording the attempt failed", job.id)

    async def _attempt(self, job: Job) -> Attempt:
        try:
            # Checked again: the config may have changed since the job was accepted.
            url = URL(check_callback_url(job.callback_url or "", self._settings))
            body, headers = self._render(job)
            response = await send_guarded(
                "POST",
                url,
                self._settings,
                headers=headers,
                body=body,
                timeout_seconds=self._settings.remote_timeout_seconds,
                max_response_bytes=RESPONSE_BYTES_READ,
            )
        except RemoteRequestFailed as exc:  # unreachable or slow: worth another try
            return Attempt(False, True, exc.message)
        except (RemoteAccessDenied, InvalidRequest) as exc:  # refused by the config: never sendable
            return Attempt(False, False, exc.message)
        except CallpipeError as exc:
            return Attempt(False, True, exc.message)
        except Exception as exc:  # a renderer bug: counted like any failed attempt
            log.exception("callback of job %s: rendering or sending failed", job.id)
            return Attempt(False, True, f"internal error: {type(exc).__name__}")
        if 200 <= response.status < 300:
            return Attempt(True, False, f"HTTP {response.status}")
        return Attempt(False, True, f"HTTP {response.status} {response.reason}".rstrip())

    def _render(self, job: Job) -> tuple[bytes, CIMultiDict[str]]:
        renderer = self._renderers.get(job.dialect, generic_callback_payload)
        body, extra = renderer(job)
        headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
        headers.update(extra)
        return body, headers

    async def _record(self, job: Job, attempt_number: int, attempt: Attempt) -> None:
        host = URL(job.callback_url or "").raw_host  # never the whole URL: it may carry credentials
        if attempt.delivered:
            await self._store.record_callback(job.id, True, None)
            log.info("callback of job %s delivered to %s (attempt %d)", job.id, host, attempt_number)
        elif attempt.retryable and attempt_number < self._settings.callback_attempts:
            delay = self.backoff_seconds(attempt_number)
            await self._store.record_callback(job.id, False, delay)
            log.info(
                "callback of job %s to %s failed (attempt %d: %s); retrying in %g s",
                job.id, host, attempt_number, attempt.detail, delay,
            )
        else:
            await self._store.record_callback(job.id, False, None)
            log.warning(
                "callback of job %s to %s failed for good after %d attempts: %s",
                job.id, host, attempt_number, attempt.detail,
            )
