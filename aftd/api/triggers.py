"""``/v1/triggers`` routes: list and inspect triggers, pause, resume, run now, retry a file."""

from __future__ import annotations

from aiohttp import web

from aftd.api.errors import ApiError, Reply
from aftd.api.registry import Registry, json_body
from aftd.api.requests import RetryRequest
from aftd.api.responses import FailedFile, Trigger, TriggerList, TriggerRetry, TriggerRun
from aftd.api.state import STATE
from aftd.api.validation import read_json_object, validate
from aftd.jobs.model import iso
from aftd.scopes import Scope
from aftd.triggers.base import TriggerStatus
from aftd.triggers.manager import RetryError, TriggerManager, UnknownTrigger
from aftd.triggers.ports import SubmitLater

__all__ = ["routes", "trigger_view"]

routes = Registry()


def trigger_view(status: TriggerStatus, *, with_files: bool = True) -> Trigger:
    details = dict(status.details)
    failed_count = int(details.pop("failedCount", 0) or 0)
    files = [FailedFile(path=f.path or "", size=f.size, mtime=f.mtime, job_id=f.job_id,
                        error=f.error, attempt=f.attempt, failed_at=iso(f.updated_at))
             for f in status.failed_files] if with_files else []
    extra = {"failed_files": files} if with_files else {}
    return Trigger(name=status.name, type=status.type, state=status.state,
                   script=status.script, last_fired_at=iso(status.last_fired_at),
                   next_fire_at=iso(status.next_fire_at), last_error=status.last_error,
                   pending_files=status.pending_files, failed_count=failed_count,
                   settings=details, **extra)


def _manager(request: web.Request) -> TriggerManager:
    manager = request.app[STATE].triggers
    if manager is None:
        raise ApiError(404, "unknown_trigger", "this daemon runs no triggers")
    return manager


def _name(request: web.Request) -> str:
    return request.match_info["name"]


def _unknown(name: str) -> ApiError:
    return ApiError(404, "unknown_trigger", f"no trigger named {name[:200]!r}")


_ONE = frozenset({404})


@routes.route("GET", "/v1/triggers", "listTriggers", "Schedules and watches, with their state",
              {200: json_body(TriggerList, "Every configured trigger")}, scope=Scope.JOBS_READ)
async def list_triggers(request: web.Request) -> Reply:
    manager = request.app[STATE].triggers
    statuses = manager.statuses() if manager is not None else []
    return Reply.of(TriggerList(triggers=[trigger_view(s, with_files=False) for s in statuses]))


@routes.route("GET", "/v1/triggers/{name}", "getTrigger", "One trigger, with its failed files",
              {200: json_body(Trigger, "The trigger")}, errors=_ONE, scope=Scope.JOBS_READ)
async def get_trigger(request: web.Request) -> Reply:
    name = _name(request)
    try:
        runtime = _manager(request).get(name)
    except UnknownTrigger:
        raise _unknown(name) from None
    return Reply.of(trigger_view(runtime.status()))


async def _pause(request: web.Request, paused: bool) -> Reply:
    name = _name(request)
    try:
        status = await _manager(request).pause(name, paused)
    except UnknownTrigger:
        raise _unknown(name) from None
    return Reply.of(trigger_view(status))


@routes.route("POST", "/v1/triggers/{name}/pause", "pauseTrigger",
              "Pause a trigger: no fires until resumed (kept across restarts)",
              {200: json_body(Trigger, "The trigger, paused")}, errors=_ONE,
              scope=Scope.TRIGGERS_MANAGE)
async def pause_trigger(request: web.Request) -> Reply:
    return await _pause(request, True)


@routes.route("POST", "/v1/triggers/{name}/resume", "resumeTrigger",
              "Resume a paused trigger (due times missed while paused do not run)",
              {200: json_body(Trigger, "The trigger, active")}, errors=_ONE,
              scope=Scope.TRIGGERS_MANAGE)
async def resume_trigger(request: web.Request) -> Reply:
    return await _pause(request, False)


@routes.route("POST", "/v1/triggers/{name}/run", "runTrigger",
              "Fire a schedule now (its overlap policy applies); list a watch's directory now",
              {200: json_body(TriggerRun, "What the trigger did")},
              errors=frozenset({404, 409}), scope=Scope.TRIGGERS_MANAGE)
async def run_trigger(request: web.Request) -> Reply:
    name = _name(request)
    try:
        result = await _manager(request).run_now(name)
    except UnknownTrigger:
        raise _unknown(name) from None
    if result.outcome == "skipped":
        raise ApiError(409, "overlap", f"not fired: {result.detail}")
    return Reply.of(TriggerRun(name=name, outcome=result.outcome, job_id=result.job_id,
                               detail=result.detail))


@routes.route("POST", "/v1/triggers/{name}/retry", "retryTriggerFile",
              "Fire a watch's failed file again",
              {200: json_body(TriggerRetry, "The file's new job")},
              errors=frozenset({404, 409, 503}), body=RetryRequest, scope=Scope.TRIGGERS_MANAGE,
              description="The file must still be there, unchanged since its job failed (a "
                          "changed file fires by itself once it is stable).")
async def retry_trigger_file(request: web.Request) -> Reply:
    name = _name(request)
    req = validate(RetryRequest, await read_json_object(request))
    try:
        fire = await _manager(request).retry(name, req.path)
    except UnknownTrigger:
        raise _unknown(name) from None
    except RetryError as exc:
        raise ApiError(409, "not_retryable", str(exc)) from None
    except SubmitLater as exc:
        raise ApiError(503, "draining", f"the file is claimed and fires when the daemon takes "
                                        f"jobs again: {exc}") from None
    if fire.state == "failed":
        raise ApiError(409, "not_retryable", fire.error or "the fire could not be submitted")
    return Reply.of(TriggerRetry(name=name, path=req.path, job_id=fire.job_id,
                                 attempt=fire.attempt))
