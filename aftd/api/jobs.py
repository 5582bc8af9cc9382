"""``/v1/jobs`` routes: trigger, inspect, list, cancel, and the job's own log."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from aftd.api.errors import ApiError, json_response
from aftd.api.state import STATE, ApiState
from aftd.api.validation import bad, parse_jobs_query, parse_trigger
from aftd.jobs.model import Job
from aftd.jobs.runner import Draining, JobConflict, JobNotFound, QueueFull
from aftd.jobs.store import IdempotencyConflict
from aftd.redact import scrub_obj
from aftd.scripts.loader import ScriptError

__all__ = ["routes"]

routes = web.RouteTableDef()
FOLLOW_POLL_S = 0.25


def job_view(state: ApiState, job: Job) -> dict[str, Any]:
    view = job.to_api(time.time())
    if state.outbox is not None:
        view["report"] = state.outbox.job_report(job.id)
    return view


@routes.post("/v1/jobs")
async def trigger(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.runner.draining:
        raise ApiError(503, "draining", "the daemon is shutting down; retry later")
    req = await parse_trigger(request)
    try:
        script = state.runner.loader.find(script_id=req.script_id, name=req.script_name)
    except ScriptError as exc:
        raise ApiError(404, "unknown_script", str(exc)) from None
    try:
        job, created = state.runner.submit(script, req.params, req.idempotency_key)
    except Draining:
        raise ApiError(503, "draining", "the daemon is shutting down; retry later") from None
    except QueueFull as exc:
        raise ApiError(503, "queue_full", f"job queue is full ({exc}); retry later") from None
    except IdempotencyConflict:
        raise ApiError(409, "idempotency_conflict",
                       "this Idempotency-Key was already used for a different request") from None
    location = f"/v1/jobs/{job.id}"
    return json_response(job_view(state, job), 201 if created else 200, {"Location": location})


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    q = parse_jobs_query(request)
    jobs = state.runner.store.list_jobs(status=q.statuses, script_id=q.script_id,
                                        limit=q.limit + 1, before_seq=q.before_seq)
    more = len(jobs) > q.limit
    jobs = jobs[: q.limit]
    views = [job_view(state, state.runner.get(j.id) or j) for j in jobs]
    cursor = str(jobs[-1].seq) if more and jobs else None
    return json_response({"jobs": views, "nextCursor": cursor})


def _job_or_404(state: ApiState, job_id: str) -> Job:
    job = state.runner.get(job_id)
    if job is None:
        raise ApiError(404, "unknown_job", f"no job with id {job_id!r}")
    return job


@routes.get("/v1/jobs/{jobId}")
async def get_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(job_view(state, _job_or_404(state, request.match_info["jobId"])))


@routes.post("/v1/jobs/{jobId}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    job_id = request.match_info["jobId"]
    try:
        job = await state.runner.cancel(job_id)
    except JobNotFound:
        raise ApiError(404, "unknown_job", f"no job with id {job_id!r}") from None
    except JobConflict as exc:
        raise ApiError(409, "job_finished", f"cannot cancel: {exc}") from None
    return json_response(job_view(state, job))


@routes.get("/v1/jobs/{jobId}/log")
async def job_log(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    job = _job_or_404(state, request.match_info["jobId"])
    after = _after(request)
    follow = request.query.get("follow", "false").lower()
    if follow not in ("true", "false", "1", "0"):
        raise bad("'follow' must be true or false")
    if follow in ("true", "1"):
        return await _follow(request, state, job.id, after)
    lines = state.runner.store.logs(job.id, after)
    return json_response({"jobId": job.id, "status": str(job.status), "lines": lines})


def _after(request: web.Request) -> int:
    raw = request.query.get("after", "0")
    if not raw.isdigit():
        raise bad(f"'after' must be a non-negative integer, got {raw!r}")
    return int(raw)


async def _follow(request: web.Request, state: ApiState, job_id: str,
                  after: int) -> web.StreamResponse:
    """Stream the log as JSON lines (NDJSON) until the job has ended and all lines are out."""
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    while True:
        job = state.runner.get(job_id)
        done = job is None or job.terminal
        lines = state.runner.store.logs(job_id, after)
        for line in lines:
            after = line["seq"]
            await resp.write(json.dumps(scrub_obj(line)).encode() + b"\n")
        if done and not lines:
            break
        if not lines:
            await asyncio.sleep(FOLLOW_POLL_S)
    await resp.write_eof()
    return resp
