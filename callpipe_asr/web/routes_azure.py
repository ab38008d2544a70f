"""HTTP handlers of the Azure Speech short-audio dialect and its token endpoint.

``POST /speech/recognition/{conversation|interactive|dictation}/cognitiveservices/v1`` takes the
raw audio body (its type is sniffed: clients send ``audio/wav; codecs=audio/pcm;
samplerate=16000``, bare ``audio/wav`` or a browser's type) and waits for the job up to
``server.sync_wait_seconds``. ``POST /sts/v1.0/issueToken`` trades a subscription key for a
10-minute token the recognize call accepts as ``Authorization: Bearer``. Both also under
``/azure`` for gateways that route by provider.
"""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from ..errors import AuthenticationFailed, CallpipeError
from ..jobs import JobRequest
from ..providers import azure
from .auth import InvalidKey, bearer_token
from .errors import renders_errors, retry_headers
from .state import KEYS, RUNTIME, SETTINGS
from .uploads import read_body

PREFIXES = ("", "/azure")
SUBSCRIPTION_KEY_HEADER = "Ocp-Apim-Subscription-Key"
TOKEN_SECRET_BYTES = 32
TOKEN_SECRET = web.AppKey("azure_token_secret", bytes)
"""Signs this app's access tokens; made when the routes are added, so each app has its own."""


def render_azure_error(error: CallpipeError) -> web.Response:
    status, body = azure.error_reply(error)
    return web.json_response(body, status=status, headers=retry_headers(error))


def _owner_by_key(request: web.Request) -> str | None:
    try:
        return request.app[KEYS].owner(request.headers.get(SUBSCRIPTION_KEY_HEADER))
    except InvalidKey as exc:
        raise azure.invalid_key() from exc
    except AuthenticationFailed as exc:
        raise azure.missing_key() from exc


def _owner(request: web.Request) -> str | None:
    """The caller, by subscription key or by a token of ours. Without configured keys anyone
    may call, and a token still names the owner it was issued to."""
    token = bearer_token(request)
    if token is None or SUBSCRIPTION_KEY_HEADER in request.headers:
        return _owner_by_key(request)
    try:
        owner = azure.token_owner(request.app[TOKEN_SECRET], token, time.time())
    except AuthenticationFailed:
        if request.app[KEYS].enabled:
            raise
        return None
    request.app[KEYS].admit_owner(owner)  # the key's dialect and rate limits hold for its tokens too
    return owner


@renders_errors(render_azure_error)
async def recognize(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    service = request.app[RUNTIME].service
    owner = _owner(request)  # before the body is read: a wrong key costs no bandwidth
    parsed = azure.parse_query(request.query)
    audio = await read_body(request, settings.server.max_upload_bytes)
    job, _ = await service.submit(JobRequest(audio=audio, options=parsed.options, owner=owner, dialect=azure.DIALECT))
    ended = await service.wait(job.id, settings.server.sync_wait_seconds)
    return web.json_response(azure.recognition_document(azure.transcript_of(ended), parsed.result_format))


@renders_errors(render_azure_error)
async def issue_token(request: web.Request) -> web.Response:
    token = azure.issue_token(request.app[TOKEN_SECRET], _owner_by_key(request), time.time())
    return web.Response(text=token, content_type=azure.TOKEN_CONTENT_TYPE, charset="us-ascii")


def add_routes(app: web.Application) -> None:
    app[TOKEN_SECRET] = secrets.token_bytes(TOKEN_SECRET_BYTES)
    modes = "|".join(azure.MODES)
    for prefix in PREFIXES:
        app.router.add_post(f"{prefix}/speech/recognition/{{mode:{modes}}}/cognitiveservices/v1", recognize)
        app.router.add_post(f"{prefix}/sts/v1.0/issueToken", issue_token)
