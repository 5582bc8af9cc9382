"""What clients send: the trigger body, its header, and the query strings, as models.

Each field's type carries both its check and its schema in ``/v1/openapi.json``. Errors are
raised as :class:`~pydantic_core.PydanticCustomError` whose type is the API error code and whose
message is the one the client gets (``aftd.api.validation`` turns them into ``ApiError``); the
messages name the field and what was wrong with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from aftd.configmodel import HOST_TAG_PATTERN, PARAM_NAME_PATTERN
from aftd.jobs.model import JobState, valid_timeout

__all__ = ["MAX_HOST_TAGS", "MAX_IDEMPOTENCY_KEY", "MAX_PARAMS",
           "MAX_QUERY_DIGITS", "REPORT_STATES", "JobsQuery", "LogQuery", "ParamItem",
           "ReportsQuery", "RequestModel", "RetryRequest", "TriggerHeaders", "TriggerRequest",
           "aliases", "kind_of"]

MAX_PARAMS = 256
MAX_IDEMPOTENCY_KEY = 200
# Query integers: 18 digits always fit SQLite's 64-bit integers.
MAX_QUERY_DIGITS = 18
_PARAM_NAME = re.compile(PARAM_NAME_PATTERN)
_SCALARS = (str, int, float, bool)


def kind_of(value: Any) -> str:
    """What a JSON value is, for messages: ``an object``, ``a list``, ``null``..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _problem(code: str, message: str) -> PydanticCustomError:
    # The message is final: a template with no placeholders, whatever the client sent.
    return PydanticCustomError(code, "{message}", {"message": message})


def _field(info: ValidationInfo) -> str:
    """The field's name as the client spells it (these models' aliases are camelCase)."""
    return to_camel(info.field_name or "")


def _refuse(code: str, message: str) -> WrapValidator:
    """Any error of the inner type becomes one error with our code; ``{field}`` in ``message``
    is the field's name."""
    def wrap(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise _problem(code, message.format(field=_field(info))) from None
    return WrapValidator(wrap)


class RequestModel(BaseModel):
    """A JSON body: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")
    unknown_message: ClassVar[str] = "unknown field {key!r}; allowed: {allowed}"


# -- POST /v1/jobs ------------------------------------------------------------------------------

ParamName = Annotated[str, StringConstraints(pattern=PARAM_NAME_PATTERN)]
ParamValue = StrictStr | StrictBool | StrictInt | StrictFloat


class ParamItem(RequestModel):
    """One parameter in the list form of ``params``."""

    name: ParamName
    value: ParamValue


ParamList = Annotated[list[ParamItem], Field(max_length=MAX_PARAMS)]
ParamObject = Annotated[dict[ParamName, ParamValue], Field(max_length=MAX_PARAMS)]


def _params_from_either_form(raw: Any, info: ValidationInfo) -> dict[str, Any]:
    """Either ``[{"name": ..., "value": ...}, ...]`` or a flat object of scalars."""
    if isinstance(raw, list):
        params = _params_from_list(raw)
    elif isinstance(raw, dict):
        params = {}
        for name, value in raw.items():
            _add_param(params, name, value, f"params.{name}")
    else:
        raise _problem("invalid_params", "'params' must be a list of {name, value} objects or "
                                         f"an object, got {kind_of(raw)}")
    _check_size(params, (info.context or {}).get("max_params_bytes"))
    return params


def _params_from_list(items: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _problem("invalid_params", f"params[{i}] must be an object with 'name' and "
                                             "'value'")
        extra = sorted(set(item) - {"name", "value"})
        if extra:
            raise _problem("invalid_params", f"params[{i}] has unknown field {extra[0]!r}")
        name = item.get("name")
        if not isinstance(name, str):
            raise _problem("invalid_params", f"params[{i}].name must be a string")
        if "value" not in item:
            raise _problem("invalid_params", f"params[{i}] ({name!r}) has no 'value'")
        _add_param(out, name, item["value"], f"params[{i}]")
    return out


def _add_param(out: dict[str, Any], name: str, value: Any, where: str) -> None:
    if not _PARAM_NAME.match(name):
        raise _problem("invalid_params", f"{where}: invalid parameter name {name!r} (letters, "
                                         "digits, _ . -; starting with a letter or _)")
    if name in out:
        raise _problem("invalid_params", f"{where}: parameter {name!r} given twice")
    if value is None or not isinstance(value, _SCALARS):
        raise _problem("invalid_params", f"{where}: parameter {name!r} must be a string, "
                                         f"number or boolean, got {kind_of(value)}")
    if len(out) >= MAX_PARAMS:
        raise _problem("invalid_params", f"too many parameters (at most {MAX_PARAMS})")
    out[name] = value


def _check_size(params: dict[str, Any], limit: int | None) -> None:
    """Params are measured as compact UTF-8 JSON, the form they are stored in."""
    if limit is None:
        return
    size = len(json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise _problem("params_too_large", f"params are {size} bytes as JSON; the limit is "
                                           f"server.max_params_bytes = {limit}")


# The validator parses both forms with messages that name the parameter; the document shows
# the two forms it accepts.
Params = Annotated[dict[str, ParamValue], BeforeValidator(
    _params_from_either_form, json_schema_input_type=ParamList | ParamObject)]
ScriptRef = Annotated[str, Strict(), StringConstraints(min_length=1),
                      _refuse("bad_request", "'{field}' must be a non-empty string")]


def _timeout(raw: Any, info: ValidationInfo) -> float:
    """The job's own check, so a trigger's timeoutS and a script's TIMEOUT_S agree."""
    seconds = valid_timeout(raw)
    if seconds is None:
        raise _problem("invalid_timeout", f"'{_field(info)}' must be a number of seconds >= 0 "
                                          "(0: no limit)")
    return seconds


Timeout = Annotated[float, Field(ge=0), BeforeValidator(_timeout)]

MAX_HOST_TAGS = 32
HostTags = Annotated[
    tuple[Annotated[str, Strict(), StringConstraints(pattern=HOST_TAG_PATTERN)], ...],
    Field(max_length=MAX_HOST_TAGS),
    _refuse("bad_request", "'{field}' must be a list of at most 32 tags (letters, digits and "
                           "_ . : / = @ + -, starting with a letter or digit)")]

_SCRIPT_FIELDS = ("scriptId", "scriptName")


def _only(given: str, other: str) -> dict[str, Any]:
    return {"required": [given], "not": {"required": [other]}}


class TriggerRequest(RequestModel):
    """Exactly one of scriptId / scriptName (case-insensitive). Params are at most
    `server.max_params_bytes` as compact JSON (413 beyond); numbers must be finite."""

    model_config = ConfigDict(json_schema_extra={
        "oneOf": [_only(*_SCRIPT_FIELDS), _only(*reversed(_SCRIPT_FIELDS))],
        "examples": [{"scriptName": "hello", "params": {"name": "world"}}]})

    script_id: ScriptRef | SkipJsonSchema[None] = None
    script_name: ScriptRef | SkipJsonSchema[None] = None
    params: Params = Field(default_factory=dict)
    timeout_s: Timeout | None = Field(None, description=(
        "Seconds the job may run (0: no limit); wins over the script's TIMEOUT_S and [jobs] "
        "timeout_s."))
    host_tags: HostTags = Field(default=(), description=(
        "The job runs only on a host that has all these tags ([host] tags), besides the "
        "script's REQUIRES_TAGS."))

    @field_validator("script_id", "script_name", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:  # absent is fine, an explicit null is not
            raise _problem("bad_request", f"'{_field(info)}' must be a non-empty string")
        return value

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_script(cls, data: Any) -> Any:
        """Checked before the fields when nothing else is wrong with the script fields, so the
        client hears about a missing (or doubled) script before anything about params."""
        if isinstance(data, dict) and not set(data) - set(aliases(cls)):
            given = [data[k] for k in _SCRIPT_FIELDS if k in data]
            if len(given) != 1 and all(isinstance(v, str) and v for v in given):
                raise _problem("bad_request", "give exactly one of 'scriptId' or 'scriptName'")
        return data


IdempotencyKey = Annotated[str, StringConstraints(
    min_length=1, max_length=MAX_IDEMPOTENCY_KEY, pattern=r"^[\x20-\x7e]+$"), _refuse(
    "bad_request", f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters")]


class TriggerHeaders(BaseModel):
    """Request headers of ``POST /v1/jobs`` (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    # Printable ASCII, as an HTTP structured-field string: the key is stored and compared as text.
    idempotency_key: IdempotencyKey | SkipJsonSchema[None] = Field(
        None, alias="Idempotency-Key", description=(
            "A retried trigger with the same key returns the same job (200) instead of starting "
            "another. Printable ASCII."))


# -- POST /v1/triggers/{name}/retry ------------------------------------------------------------

FilePath = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=4096),
                     _refuse("bad_request", "'{field}' must be a non-empty string (the file's "
                                            "path relative to the VFS root)")]


class RetryRequest(RequestModel):
    """The failed file to fire again: its path relative to the VFS root, as the job's `path`
    param and the trigger's `failedFiles` show it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"path": "outbound/a.csv"}]})

    path: FilePath


# -- query strings ------------------------------------------------------------------------------

def _query_int(lo: int, hi: int | None) -> Callable[[Any, ValidationInfo], int]:
    kind = "a non-negative" if lo == 0 else "a positive"

    def parse(raw: Any, info: ValidationInfo) -> int:
        name = _field(info)
        # str.isdigit() also accepts digits int() refuses (superscripts) and other scripts'.
        if not (isinstance(raw, str) and raw.isascii() and raw.isdigit()
                and len(raw) <= MAX_QUERY_DIGITS):
            raise _problem("bad_request", f"'{name}' must be {kind} integer (at most "
                                          f"{MAX_QUERY_DIGITS} digits), got {str(raw)[:40]!r}")
        value = int(raw)
        if value < lo or (hi is not None and value > hi):
            raise _problem("bad_request", f"'{name}' must be between {lo} and {hi or 'any'}, "
                                          f"got {value}")
        return value
    return parse


def _query_bool(raw: Any, info: ValidationInfo) -> bool:
    if raw not in ("true", "false"):
        raise _problem("bad_request",
                       f"'{_field(info)}' must be true or false, got {str(raw)[:40]!r}")
    return bool(raw == "true")


def _states(raw: Any) -> tuple[str, ...]:
    states: list[str] = []
    for s in filter(None, str(raw).split(",")):
        if s not in JobState.__members__.values():
            raise _problem("bad_request", f"status {s!r} is not one of {', '.join(JobState)}")
        states.append(s)
    return tuple(states)


# The reports GET /v1/reports lists: those still owed, and those given up on.
REPORT_STATES = ("pending", "abandoned")


def _report_states(raw: Any) -> tuple[str, ...]:
    states: list[str] = []
    for s in filter(None, str(raw).split(",")):
        if s not in REPORT_STATES:
            raise _problem("bad_request", f"state {s!r} is not one of {', '.join(REPORT_STATES)}")
        states.append(s)
    return tuple(states)


_MAX_QUERY_INT = 10**MAX_QUERY_DIGITS - 1
_STATES = "|".join(JobState)
Limit = Annotated[int, Field(ge=1, le=1000), BeforeValidator(_query_int(1, 1000))]
Cursor = Annotated[int, Field(ge=1, le=_MAX_QUERY_INT), BeforeValidator(_query_int(1, None))]
After = Annotated[int, Field(ge=0, le=_MAX_QUERY_INT), BeforeValidator(_query_int(0, None))]
QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
_REPORT_STATE = "|".join(REPORT_STATES)
ReportStates = Annotated[tuple[Literal["pending", "abandoned"], ...], BeforeValidator(
    _report_states, json_schema_input_type=Annotated[str, StringConstraints(
        pattern=f"^,*(?:(?:{_REPORT_STATE}),+)*(?:{_REPORT_STATE})?$")])]
States = Annotated[tuple[JobState, ...], BeforeValidator(
    _states, json_schema_input_type=Annotated[str, StringConstraints(
        pattern=f"^,*(?:(?:{_STATES}),+)*(?:{_STATES})?$")])]


class QueryModel(BaseModel):
    """A query string: camelCase names, unknown names refused; one value per name except the
    names in ``repeated``, whose values are joined with commas."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")
    unknown_message: ClassVar[str] = "unknown query parameter {key!r}"
    repeated: ClassVar[frozenset[str]] = frozenset()


class JobsQuery(QueryModel):
    """``GET /v1/jobs``."""

    repeated = frozenset({"status"})

    status: States = Field(default=(), description="Comma-separated states",
                           json_schema_extra={"default": ""})
    script: str | SkipJsonSchema[None] = Field(None, description="Only jobs of this script")
    script_id: str | SkipJsonSchema[None] = Field(None, description="The same as script")
    trigger: str | SkipJsonSchema[None] = Field(
        None, description="Only jobs this trigger fired ([[triggers]] name)")
    limit: Limit = 50
    cursor: Cursor | SkipJsonSchema[None] = Field(
        None, description="nextCursor of the previous page")
    params: QueryBool = Field(False, description="Include each job's params")

    @property
    def script_filter(self) -> str | None:
        return self.script or self.script_id


class ReportsQuery(QueryModel):
    """``GET /v1/reports``."""

    repeated = frozenset({"state"})

    state: ReportStates = Field(default=(), description="Comma-separated: pending, abandoned "
                                "(default: both)", json_schema_extra={"default": ""})
    limit: Limit = 50
    cursor: Cursor | SkipJsonSchema[None] = Field(
        None, description="nextCursor of the previous page")

    @property
    def states(self) -> tuple[str, ...]:
        return self.state or REPORT_STATES


class LogQuery(QueryModel):
    """``GET /v1/jobs/{jobId}/log``; other names are ignored."""

    model_config = ConfigDict(extra="ignore")

    after: After = Field(0, description="Only lines with seq greater than this")
    follow: QueryBool = Field(False, description="Stream NDJSON lines until the job ends")


def aliases(model: type[BaseModel]) -> list[str]:
    """The model's field names as clients spell them, in order."""
    return [f.alias or name for name, f in model.model_fields.items()]
