"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

from importlib import resources

import yaml
from aiohttp import web

from .. import __version__
from .state import RUNTIME, SETTINGS

OPENAPI = web.AppKey("openapi", dict)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about the store or the model."""
    return web.json_response({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the store answers and, where this process runs workers, the default model is loaded."""
    settings = request.app[SETTINGS]
    runtime = request.app.get(RUNTIME)
    checks: dict[str, str] = {}
    if runtime is None:
        return web.json_response({"status": "starting", "checks": {"store": "not open"}}, status=503)
    checks["store"] = "ok" if await runtime.service.store_reachable() else "unreachable"
    if runtime.runs_workers:
        if runtime.registry.is_loaded(settings.default_model):
            checks["model"] = "ok"
        else:
            checks["model"] = f"failed: {runtime.model_error}" if runtime.model_error else "loading"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


def load_openapi() -> dict[str, object]:
    """The OpenAPI document shipped in the package, with this version filled in."""
    text = resources.files("callpipe_asr.web").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, object] = yaml.safe_load(text)
    info = document["info"]
    assert isinstance(info, dict)
    info["version"] = __version__
    return document


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def add_routes(app: web.Application) -> None:
    app[OPENAPI] = load_openapi()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
