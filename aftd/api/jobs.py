"""``/v1/jobs`` routes: trigger, inspect, list, cancel, and the job's own log."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiohttp import web

from aftd.api.auth import require_script
from aftd.api.errors import ApiError, Reply, encode
from aftd.api.paging import Page, fill_page
from aftd.api.registry import Registry, Response, json_body
from aftd.api.requests import JobsQuery, LogQuery, TriggerHeaders, TriggerRequest
from aftd.api.responses import Job, JobList, JobLog, LogLine, Report
from aftd.api.state import LIMITS, STATE, ApiState
from aftd.api.validation import (
    first_error,
    header_input,
    query_input,
    read_json_object,
    try_validate,
    valid_job_id,
    validate,
)
from aftd.jobs.model import Job as JobRecord
from aftd.jobs.runner import Draining, JobConflict, JobNotFound, QueueFull, StoreUnavailable
from aftd.jobs.store import IdempotencyConflict
from aftd.scopes import Scope
from aftd.scripts.loader import ScriptError, ScriptInfo, requires_tags

__all__ = ["routes"]

log = structlog.get_logger("aftd.api")

routes = Registry()
FOLLOW_POLL_S = 0.25
LOG_CHUNK = 200
# Which problem of a trigger a client hears about first: the script, then the header, then
# the params and the timeout.
_TRIGGER_ORDER = ("scriptId", "scriptName", "Idempotency-Key", "params", "timeoutS", "hostTags")
_JOB_LINKS = ("getJob", "cancelJob", "getJobLog")


async def job_view(state: ApiState, job: JobRecord, with_params: bool = True) -> Job:
    reports = state.outbox is not None
    # A job that has not started has run no script, so it owes no report: a trigger's answer
    # (almost always a queued job) needs no read of the outbox.
    started = str(job.status) != "queued"
    report = await state.outbox.job_report(job.id) if reports and started else None
    return Job.of(job, time.time(), with_params=with_params, reports=reports,
                  report=Report.model_validate(report) if report is not None else None)


def _created(description: str) -> Response:
    return json_body(Job, description, headers={"Location": "The job's URL"}, links=_JOB_LINKS)


@routes.route("POST", "/v1/jobs", "triggerJob", "Trigger a script as a new job",
              {201: _created("Job created"),
               200: _created("Existing job for this Idempotency-Key")},
              errors=frozenset({404, 409, 503}), body=TriggerRequest, headers=TriggerHeaders,
              scope=Scope.JOBS_TRIGGER,
              description="A key whose `scripts` patterns do not match the script's id gets "
                          "403 `script_not_allowed`.")
async def trigger(request: web.Request) -> Reply:
    state = request.app[STATE]
    if state.runner.draining:
        raise ApiError(503, "draining", "the daemon is shutting down; retry later")
    req, headers = await _trigger_request(request)
    try:
        script = state.runner.loader.find(script_id=req.script_id, name=req.script_name)
    except ScriptError as exc:
        raise ApiError(404, "unknown_script", str(exc)) from None
    require_script(request, script.id)
    tags = _required_tags(state, script, req.host_tags)
    try:
        job, created = await state.runner.submit(script, req.params, headers.idempotency_key,
                                                 req.timeout_s, host_tags=tags)
    except StoreUnavailable as exc:
        raise ApiError(503, "store_unavailable", f"{exc}; retry later") from None
    except Draining:
        raise ApiError(503, "draining", "the daemon is shutting down; retry later") from None
    except QueueFull as exc:
        raise ApiError(503, "queue_full", f"job queue is full ({exc}); retry later") from None
    except IdempotencyConflict:
        raise ApiError(409, "idempotency_conflict",
                       "this Idempotency-Key was already used for a different request") from None
    return Reply.of(await job_view(state, job), 201 if created else 200,
                    {"Location": f"/v1/jobs/{job.id}"})


def _required_tags(state: ApiState, script: ScriptInfo,
                   host_tags: tuple[str, ...]) -> tuple[str, ...]:
    """The script's REQUIRES_TAGS and the trigger's hostTags. A single host (no fleet) refuses
    a job it can never run; a fleet host queues it for whichever host has the tags."""
    try:
        tags = tuple(sorted({*requires_tags(script), *host_tags}))
    except ScriptError as exc:
        raise ApiError(409, "bad_script", str(exc)) from None
    if state.host_tags is not None:
        missing = sorted(set(tags) - set(state.host_tags))
        if missing:
            raise ApiError(409, "no_host_with_tags", f"this host lacks the tags {missing} the "
                           "job requires ([host] tags), and no other host shares its store")
    return tags


async def _trigger_request(request: web.Request) -> tuple[TriggerRequest, TriggerHeaders]:
    data = await read_json_object(request)
    context = {"max_params_bytes": request.app[LIMITS].max_params_bytes}
    req, body_problems = try_validate(TriggerRequest, data, context)
    headers, header_problems = try_validate(TriggerHeaders, header_input(request, TriggerHeaders))
    if req is None or headers is None:
        raise first_error(body_problems + header_problems, _TRIGGER_ORDER)
    return req, headers


@routes.route("GET", "/v1/jobs", "listJobs", "List jobs, newest first, a page at a time",
              {200: json_body(JobList, "A page of jobs")}, query=JobsQuery,
              scope=Scope.JOBS_READ,
              description="A page holds at most `limit` jobs and at most "
                          "`server.max_page_bytes` of JSON (always at least one job); "
                          "`nextCursor` continues it. Rows leave out `params` unless "
                          "`params=true`.")
async def list_jobs(request: web.Request) -> Reply:
    state = request.app[STATE]
    q = validate(JobsQuery, query_input(request, JobsQuery))
    page = Page(request.app[LIMITS].max_page_bytes, JobList, "jobs")
    return page.reply_after(*await _fill_page(state, q, page))


async def _fill_page(state: ApiState, q: JobsQuery, page: Page) -> tuple[int | None, bool]:
    """Add jobs to ``page``; return the last added job's seq and whether more follow."""
    async def fetch(n: int, cursor: int | None) -> list[JobRecord]:
        return await state.runner.store.list_jobs(status=q.status, script_id=q.script_filter,
                                                  limit=n, before_seq=cursor, trigger=q.trigger)

    async def item(stored: JobRecord) -> Job:
        job = (await state.runner.get(stored.id)) or stored
        return await job_view(state, job, q.params)
    return await fill_page(page, q.limit, q.cursor, fetch, item, lambda j: j.seq)


async def _job_or_404(state: ApiState, job_id: str) -> JobRecord:
    job = await state.runner.get(job_id) if valid_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "unknown_job", f"no job with id {job_id[:200]!r}")
    return job


@routes.route("GET", "/v1/jobs/{jobId}", "getJob", "One job, complete",
              {200: json_body(Job, "The job")}, errors=frozenset({404}), scope=Scope.JOBS_READ)
async def get_job(request: web.Request) -> Reply:
    state = request.app[STATE]
    job = await _job_or_404(state, request.match_info["jobId"])
    return Reply.of(await job_view(state, job))


@routes.route("POST", "/v1/jobs/{jobId}/cancel", "cancelJob", "Cancel a queued or running job",
              {200: json_body(Job, "The job after cancelling")}, errors=frozenset({404, 409}),
              scope=Scope.JOBS_CANCEL)
async def cancel_job(request: web.Request) -> Reply:
    state = request.app[STATE]
    job_id = request.match_info["jobId"]
    try:
        if not valid_job_id(job_id):
            raise JobNotFound(job_id)
        job = await state.runner.cancel(job_id)
    except JobNotFound:
        raise ApiError(404, "unknown_job", f"no job with id {job_id[:200]!r}") from None
    except JobConflict as exc:
        raise ApiError(409, "job_finished", f"cannot cancel: {exc}") from None
    except StoreUnavailable as exc:
        raise ApiError(503, "store_unavailable", f"{exc}; retry later") from None
    return Reply.of(await job_view(state, job))


@routes.route("GET", "/v1/jobs/{jobId}/log", "getJobLog",
              "The job's own log lines, a page at a time",
              {200: Response("Log lines", {"application/json": JobLog,
                                           "application/x-ndjson": LogLine})},
              errors=frozenset({404}), query=LogQuery, scope=Scope.JOBS_READ,
              description="A page holds at most `server.max_page_bytes` of JSON; `nextAfter` "
                          "continues it. With `follow=true` the lines are streamed as NDJSON "
                          "until the job ends.")
async def job_log(request: web.Request) -> Reply | web.StreamResponse:
    """The job's log lines after ``after``, within the page budget; ``nextAfter`` continues."""
    state = request.app[STATE]
    job = await _job_or_404(state, request.match_info["jobId"])
    q = validate(LogQuery, query_input(request, LogQuery))
    if q.follow:
        return await _follow(request, state, job.id, q.after)
    page = Page(request.app[LIMITS].max_page_bytes, JobLog, "lines",
                {"job_id": job.id, "status": job.status})
    next_after = await _fill_log_page(state, job.id, q.after, page)
    return page.reply(job_id=job.id, status=job.status, next_after=next_after)


async def _fill_log_page(state: ApiState, job_id: str, after: int,
                         page: Page) -> int | None:
    while True:
        lines = await state.runner.store.logs(job_id, after, limit=LOG_CHUNK)
        for line in lines:
            if not page.add(LogLine.model_validate(line)):
                return after
            after = line["seq"]
        if len(lines) < LOG_CHUNK:
            return None


async def _follow(request: web.Request, state: ApiState, job_id: str,
                  after: int) -> web.StreamResponse:
    """Stream the log as JSON lines (NDJSON) until the job has ended and all lines are out.

    A client that stops reading for ``server.body_timeout_s`` is disconnected.
    """
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    timeout = request.app[LIMITS].body_timeout_s
    try:
        await _stream_lines(resp, state, job_id, after, timeout)
    except TimeoutError:
        log.info("log_follower_too_slow", job_id=job_id, timeout_s=timeout)
        if request.transport is not None:
            request.transport.abort()
        return resp
    except ConnectionError:
        return resp  # the follower went away
    await resp.write_eof()
    return resp


async def _stream_lines(resp: web.StreamResponse, state: ApiState, job_id: str, after: int,
                        write_timeout_s: float) -> None:
    while True:
        job = await state.runner.get(job_id)
        # Done once the final state and every log line are in the store.
        done = job is None or (job.terminal and not state.runner.in_flight(job_id))
        lines = await state.runner.store.logs(job_id, after, limit=LOG_CHUNK)
        for line in lines:
            after = line["seq"]
            async with asyncio.timeout(write_timeout_s):
                await resp.write(encode(LogLine.model_validate(line)).encode() + b"\n")
        if done and not lines:
            return
        if not lines:
            await asyncio.sleep(FOLLOW_POLL_S)
