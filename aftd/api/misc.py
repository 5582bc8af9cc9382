"""Scripts, health, liveness, metrics and the OpenAPI document."""

from __future__ import annotations

import time

from aiohttp import web

from aftd import __version__
from aftd.api.errors import ApiError, json_response
from aftd.api.openapi import openapi_document
from aftd.api.state import STATE

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/livez")
async def livez(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    runner = state.runner
    body = {
        "status": "draining" if runner.draining else "ok",
        "version": __version__,
        "uptimeSeconds": round(time.time() - state.started_at, 1),
        "jobs": {"running": runner.running_count, "queued": runner.queued_count},
    }
    if state.outbox is not None:
        body["reports"] = {"pending": state.outbox.depth()}
    return json_response(body, 503 if runner.draining else 200)


@routes.get("/v1/scripts")
async def scripts(request: web.Request) -> web.Response:
    loader = request.app[STATE].runner.loader
    return json_response({"scripts": [s.to_api() for s in loader.scripts()]})


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    render = request.app[STATE].metrics
    if render is None:
        raise ApiError(404, "not_found", "metrics are not enabled")
    body, content_type = render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp
