"""From a request to models: the body through the strict JSON parser, then bodies, headers and
query strings validated into the models of :mod:`aftd.api.requests`; the first problem becomes
an :class:`ApiError` whose message names the field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from aftd import strictjson
from aftd.api.errors import ApiError
from aftd.api.requests import QueryModel, aliases, kind_of

__all__ = ["MAX_JSON_DEPTH", "ValidationProblems", "bad", "first_error", "header_input",
           "query_input", "read_json_object", "try_validate", "valid_job_id", "validate"]

M = TypeVar("M", bound=BaseModel)

# A trigger body is three levels deep; anything far deeper is an attack on the parser.
MAX_JSON_DEPTH = 32
_JOB_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Our error codes and their statuses; any other error type is pydantic's own (a fallback).
_STATUS = {"bad_request": 400, "invalid_params": 400, "invalid_timeout": 400,
           "params_too_large": 413}

# A model's errors, each with the model that raised it (for its unknown-key message).
ValidationProblems = list[tuple[type[BaseModel], ErrorDetails]]


def bad(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # raises 413 past client_max_size
    if not raw.strip():
        raise bad("request body is empty; expected a JSON object")
    try:
        data = strictjson.loads(raw)
    except RecursionError:
        raise bad(f"request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)",
                  "too_deep") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise bad(f"request body is not valid JSON: {exc}", "invalid_json") from None
    problem = strictjson.first_problem(data, MAX_JSON_DEPTH)
    if problem is not None:
        code = "too_deep" if problem.reason.startswith("nested") else "invalid_json"
        raise bad(f"{problem.path}: {problem.reason}", code)
    if not isinstance(data, dict):
        raise bad(f"request body must be a JSON object, got {kind_of(data)}")
    return data


def query_input(request: web.Request, model: type[QueryModel]) -> dict[str, str]:
    """The query string as the model's input: the first value of each name, or all of them
    joined with commas for the model's ``repeated`` names."""
    q = request.query
    return {k: ",".join(q.getall(k)) if k in model.repeated else q[k] for k in q}


def header_input(request: web.Request, model: type[BaseModel]) -> dict[str, str]:
    """The request headers the model declares (header names are case-insensitive)."""
    return {n: request.headers[n] for n in aliases(model) if n in request.headers}


def try_validate(model: type[M], data: Mapping[str, Any],
                 context: Mapping[str, Any] | None = None) -> tuple[M | None, ValidationProblems]:
    try:
        return model.model_validate(data, context=context), []
    except ValidationError as exc:
        return None, [(model, e) for e in exc.errors()]


def validate(model: type[M], data: Mapping[str, Any],
             context: Mapping[str, Any] | None = None) -> M:
    value, problems = try_validate(model, data, context)
    if value is None:
        raise first_error(problems, ())
    return value


def first_error(problems: ValidationProblems, order: Sequence[str]) -> ApiError:
    """The problem a client hears about: an unknown key (the first by name), else the first in
    ``order`` of the top-level fields (model-level problems before any field), else the first
    pydantic found."""
    def rank(problem: tuple[type[BaseModel], ErrorDetails]) -> tuple[int, str, int]:
        loc = problem[1]["loc"]
        if problem[1]["type"] == "extra_forbidden" and len(loc) == 1:
            return (0, str(loc[0]), 0)
        head = str(loc[0]) if loc else ""
        return (1, "", order.index(head) if head in order else -1)

    model, err = min(problems, key=rank)
    return _api_error(model, err)


def _api_error(model: type[BaseModel], err: ErrorDetails) -> ApiError:
    loc, kind = err["loc"], err["type"]
    if kind == "extra_forbidden" and len(loc) == 1:
        template = getattr(model, "unknown_message", "unknown field {key!r}")
        return bad(template.format(key=loc[0], allowed=", ".join(aliases(model))))
    if kind in _STATUS:
        return ApiError(_STATUS[kind], kind, err["msg"])
    # pydantic's own message, for a check that has no message of ours.
    return bad(f"{_path(loc)}: {err['msg']}")


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def valid_job_id(job_id: str) -> bool:
    """Job ids are UUIDs; anything else cannot name a job and never reaches the store."""
    return _JOB_ID.fullmatch(job_id) is not None
