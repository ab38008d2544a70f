"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

from importlib import resources
from typing import Any

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
    if runtime.service.draining:  # a load balancer stops sending work while running jobs finish
        checks["shutdown"] = "draining"
    if runtime.runs_workers:
        if runtime.registry.is_loaded(settings.default_model):
            checks["model"] = "ok"
        else:
            checks["model"] = f"failed: {runtime.model_error}" if runtime.model_error else "loading"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


def load_openapi() -> dict[str, Any]:
    """The OpenAPI document shipped in the package, with this version filled in.

    ``openapi.yaml`` holds the core API; each dialect describes its endpoints in
    ``openapi/<dialect>.yaml`` (``paths`` and ``components.schemas``), merged here.
    """
    package = resources.files("callpipe_asr.web")
    document: dict[str, Any] = yaml.safe_load(package.joinpath("openapi.yaml").read_text(encoding="utf-8"))
    document["info"]["version"] = __version__
    fragments = package.joinpath("openapi")
    if fragments.is_dir():
        for fragment in sorted(fragments.iterdir(), key=lambda f: f.name):
            if fragment.name.endswith(".yaml"):
                part = yaml.safe_load(fragment.read_text(encoding="utf-8")) or {}
                document["paths"].update(part.get("paths", {}))
                schemas = part.get("components", {}).get("schemas", {})
                document["components"]["schemas"].update(schemas)
    return document


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def add_routes(app: web.Application) -> None:
    app[OPENAPI] = load_openapi()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
