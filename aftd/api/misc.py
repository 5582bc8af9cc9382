"""Scripts, the calling key, health, liveness, metrics and the OpenAPI document."""

from __future__ import annotations

import time

from aiohttp import web

from aftd import __version__
from aftd.api.auth import calling_key
from aftd.api.errors import ApiError, Reply, json_response
from aftd.api.openapi import openapi_document
from aftd.api.registry import Registry, Response, json_body
from aftd.api.responses import (
    Health,
    JobCounts,
    Livez,
    Me,
    ReportCounts,
    Script,
    ScriptList,
    Throughput,
    ThroughputBucket,
)
from aftd.api.state import REGISTRY, STATE
from aftd.jobs.model import iso
from aftd.scopes import ANY_KEY, Scope, effective, grants, script_allowed
from aftd.throughput import BUCKET_S

__all__ = ["routes"]

routes = Registry()


@routes.route("GET", "/v1/scripts", "listScripts", "Scripts that can be triggered",
              {200: json_body(ScriptList, "Scripts")}, scope=Scope.JOBS_READ)
async def scripts(request: web.Request) -> Reply:
    loader = request.app[STATE].runner.loader
    key = calling_key(request)
    patterns = key.scripts if key is not None and grants(key.scopes, Scope.JOBS_TRIGGER) else ()
    return Reply.of(ScriptList(scripts=[
        Script(script_id=s.id, name=s.name, description=s.description,
               triggerable=script_allowed(patterns, s.id),
               language="syncjs" if s.language == "syncjs" else "python")
        for s in loader.scripts()]))


@routes.route("GET", "/v1/me", "getMe", "The calling API key and what it may do",
              {200: json_body(Me, "The key's name, scopes and script patterns")}, scope=ANY_KEY)
async def me(request: web.Request) -> Reply:
    key = calling_key(request)
    if key is None:  # every non-public route is authenticated; this is a wiring bug
        raise ApiError(401, "unauthorized", "missing X-API-Key header")
    return Reply.of(Me(name=key.name, scopes=effective(key.scopes), scripts=list(key.scripts)))


@routes.route("GET", "/v1/health", "getHealth", "Daemon health (authenticated)",
              {200: json_body(Health, "Healthy"), 503: json_body(Health, "Draining")},
              scope=ANY_KEY)
async def health(request: web.Request) -> Reply:
    state = request.app[STATE]
    runner = state.runner
    body = Health(status="draining" if runner.draining else "ok", version=__version__,
                  uptime_seconds=round(time.time() - state.started_at, 1),
                  jobs=JobCounts(running=runner.running_count, queued=runner.queued_count))
    if state.outbox is not None:
        body.reports = ReportCounts(pending=state.outbox.depth())
    return Reply.of(body, 503 if runner.draining else 200)


@routes.route("GET", "/v1/stats/throughput", "getThroughput",
              "Bytes transferred per minute over the last hour",
              {200: json_body(Throughput, "One bucket per minute, oldest first")},
              errors=frozenset({404}), scope=Scope.METRICS_READ)
async def throughput(request: web.Request) -> Reply:
    ring = request.app[STATE].throughput
    if ring is None:
        raise ApiError(404, "not_found", "throughput is not recorded by this daemon")
    buckets = [ThroughputBucket(start=iso(start), bytes=n) for start, n in ring.series()]
    return Reply.of(Throughput(bucket_seconds=BUCKET_S, buckets=buckets,
                               total_bytes=sum(b.bytes for b in buckets)))


@routes.route("GET", "/livez", "livez", "Unauthenticated liveness probe",
              {200: json_body(Livez, "Alive")}, public=True)
async def livez(request: web.Request) -> Reply:
    return Reply.of(Livez(status="ok"))


@routes.route("GET", "/metrics", "getMetrics", "Prometheus metrics (text exposition format)",
              {200: Response("Metrics", {"text/plain": {"type": "string"}})},
              errors=frozenset({404}), scope=Scope.METRICS_READ)
async def metrics(request: web.Request) -> web.StreamResponse:
    render = request.app[STATE].metrics
    if render is None:
        raise ApiError(404, "not_found", "metrics are not enabled")
    body, content_type = render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


@routes.route("GET", "/v1/openapi.json", "getOpenApi", "This document",
              {200: Response("OpenAPI document", {"application/json": {"type": "object"}})},
              scope=ANY_KEY)
async def openapi(request: web.Request) -> web.StreamResponse:
    return json_response(openapi_document(request.app[REGISTRY]))
