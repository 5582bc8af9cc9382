"""Validation of request bodies and query strings; errors name the offending field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aftd.api.errors import ApiError
from aftd.jobs.model import JobState

__all__ = ["JobsQuery", "TriggerRequest", "parse_jobs_query", "parse_trigger"]

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_SCALARS = (str, int, float, bool)
MAX_PARAMS = 256
MAX_IDEMPOTENCY_KEY = 200


def bad(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


@dataclass(frozen=True)
class TriggerRequest:
    script_id: str | None
    script_name: str | None
    params: dict[str, Any]
    idempotency_key: str | None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # raises 413 past client_max_size
    if not raw.strip():
        raise bad("request body is empty; expected a JSON object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise bad(f"request body must be a JSON object, got {_kind(data)}")
    return data


async def parse_trigger(request: web.Request) -> TriggerRequest:
    data = await read_json_object(request)
    unknown = sorted(set(data) - {"scriptId", "scriptName", "params"})
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}; allowed: scriptId, scriptName, params")
    script_id = _opt_str(data, "scriptId")
    script_name = _opt_str(data, "scriptName")
    if (script_id is None) == (script_name is None):
        raise bad("give exactly one of 'scriptId' or 'scriptName'")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise bad(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters")
    return TriggerRequest(script_id, script_name, parse_params(data.get("params")), key)


def _opt_str(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise bad(f"'{field}' must be a non-empty string")
    return value


def parse_params(raw: Any) -> dict[str, Any]:
    """Either ``[{"name": ..., "value": ...}, ...]`` or a flat object of scalars."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        return _params_from_list(raw)
    if isinstance(raw, dict):
        return _params_from_object(raw)
    raise bad(f"'params' must be a list of {{name, value}} objects or an object, got {_kind(raw)}",
              "invalid_params")


def _params_from_list(items: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad(f"params[{i}] must be an object with 'name' and 'value'", "invalid_params")
        extra = sorted(set(item) - {"name", "value"})
        if extra:
            raise bad(f"params[{i}] has unknown field {extra[0]!r}", "invalid_params")
        name = item.get("name")
        if not isinstance(name, str):
            raise bad(f"params[{i}].name must be a string", "invalid_params")
        if "value" not in item:
            raise bad(f"params[{i}] ({name!r}) has no 'value'", "invalid_params")
        _add_param(out, name, item["value"], f"params[{i}]")
    return out


def _params_from_object(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in obj.items():
        _add_param(out, name, value, f"params.{name}")
    return out


def _add_param(out: dict[str, Any], name: str, value: Any, where: str) -> None:
    if not _PARAM_NAME.match(name):
        raise bad(f"{where}: invalid parameter name {name!r} (letters, digits, _ . -; "
                  "starting with a letter or _)", "invalid_params")
    if name in out:
        raise bad(f"{where}: parameter {name!r} given twice", "invalid_params")
    if value is None or not isinstance(value, _SCALARS):
        raise bad(f"{where}: parameter {name!r} must be a string, number or boolean, "
                  f"got {_kind(value)}", "invalid_params")
    if len(out) >= MAX_PARAMS:
        raise bad(f"too many parameters (at most {MAX_PARAMS})", "invalid_params")
    out[name] = value


@dataclass(frozen=True)
class JobsQuery:
    statuses: tuple[str, ...]
    script_id: str | None
    limit: int
    before_seq: int | None


def parse_jobs_query(request: web.Request) -> JobsQuery:
    q = request.query
    unknown = sorted(set(q) - {"status", "script", "scriptId", "limit", "cursor"})
    if unknown:
        raise bad(f"unknown query parameter {unknown[0]!r}")
    statuses: list[str] = []
    for raw in q.getall("status", []):
        for s in filter(None, raw.split(",")):
            if s not in JobState.__members__.values():
                raise bad(f"status {s!r} is not one of {', '.join(JobState)}")
            statuses.append(s)
    return JobsQuery(tuple(statuses), q.get("script") or q.get("scriptId"),
                     _int_query(q.get("limit"), "limit", 50, 1, 1000),
                     _int_query(q.get("cursor"), "cursor", None, 1, None))


def _int_query(raw: str | None, name: str, default: int | None, lo: int,
               hi: int | None) -> Any:
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise bad(f"'{name}' must be a positive integer, got {raw!r}")
    value = int(raw)
    if value < lo or (hi is not None and value > hi):
        raise bad(f"'{name}' must be between {lo} and {hi or 'any'}, got {value}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
