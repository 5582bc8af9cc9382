"""What the API answers: every JSON body a handler returns is one of these models, and
``/v1/openapi.json`` documents these same models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from aftd import strictjson
from aftd.jobs.model import Job as JobRecord
from aftd.jobs.model import JobState, iso

__all__ = ["Error", "ErrorDetail", "FailedFile", "Health", "Job", "JobCounts", "JobList",
           "JobLog", "Livez", "LogLine", "Me", "Progress", "Report", "ReportCounts", "ReportItem",
           "ReportList", "ResponseModel", "Script", "ScriptList", "Session", "SignedOut",
           "Throughput", "ThroughputBucket", "Trigger", "TriggerList", "TriggerRetry",
           "TriggerRun"]


class ResponseModel(BaseModel):
    """A response body: built in Python by field name, sent with camelCase keys; fields that
    were never given are left out (``exclude_unset``), so an optional field is either absent
    or, where its type says so, null."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")

    def to_json_data(self) -> Any:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
# A stored param as the trigger gave it; null stands for a non-finite number stored before the
# API refused them.
StoredParam = StrictStr | StrictBool | StrictInt | StrictFloat | None


class Progress(ResponseModel):
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    bytes_per_second: float


ReportState = Literal["intent", "pending", "delivered", "abandoned"]


class Report(ResponseModel):
    """Delivery of the job's final report."""

    report_id: int = Field(description="For POST /v1/reports/{reportId}/retry")
    state: ReportState
    attempts: NonNegativeInt
    last_error: str | None
    last_status: int | None = Field(description="HTTP status of the last delivery attempt")
    delivered_at: Timestamp | None
    next_attempt_at: Timestamp | None = Field(description="When a pending report is retried")
    idempotency_key: str | None = Field(description="Sent with every attempt of this report")


class ReportItem(Report):
    """A report in the outbox, for the list of reports and a retry's answer."""

    job_id: str
    created_at: Timestamp


class ReportList(ResponseModel):
    """A page of reports, newest first."""

    reports: list[ReportItem]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class Job(ResponseModel):
    """A job. List rows leave out ``params`` unless asked for; ``report`` is there when the
    daemon delivers reports (null: the job has none)."""

    job_id: str
    script_id: str
    status: JobState
    params: dict[str, StoredParam] = Field(default_factory=dict)
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    exit_code: int | None
    error: str | None
    timeout_s: NonNegativeFloat | None = Field(description="The trigger's timeoutS, if it gave one")
    trigger: str | None = Field(description=(
        "The [[triggers]] entry (schedule or watch) that fired the job; null: started through "
        "the API"))
    progress: Progress
    report: Report | None = Field(None, description="Delivery of the final report")
    host_tags: list[str] = Field(default_factory=list, description=(
        "Tags a host must have to run the job (the script's REQUIRES_TAGS and the trigger's "
        "hostTags); absent when none"))
    host: str | None = Field(None, description="The fleet host that ran the job ([host] id); "
                                               "absent on a single host")

    @classmethod
    def of(cls, job: JobRecord, now: float, *, with_params: bool = True,
           reports: bool = False, report: Report | None = None) -> Job:
        """The API's view of a job record; ``reports``: the daemon delivers reports, so the
        view has a ``report`` (null when the job has none)."""
        p = job.progress
        dur = job.duration_s(now)
        rate = p.bytes_done / dur if dur and dur > 0 else 0.0
        extra: dict[str, Any] = {"params": job.params} if with_params else {}
        if reports:
            extra["report"] = report
        if job.host_tags:
            extra["host_tags"] = list(job.host_tags)
        if job.host is not None:
            extra["host"] = job.host
        return cls(
            job_id=job.id, script_id=job.script_id, status=job.status, **extra,
            created_at=iso(job.created_at), started_at=iso(job.started_at),
            finished_at=iso(job.finished_at), exit_code=job.exit_code, error=job.error,
            timeout_s=job.timeout_s, trigger=job.trigger,
            progress=Progress(files_done=p.files_done, files_total=p.files_total,
                              bytes_done=p.bytes_done, bytes_total=p.bytes_total,
                              bytes_per_second=round(rate, 1)))


class JobList(ResponseModel):
    """A page of jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


def _text(value: Any) -> Any:
    """A log entry's well-known fields are text; anything else a script passed is shown as its
    JSON text rather than breaking the page."""
    return value if isinstance(value, str) else strictjson.dumps(value)


LogText = Annotated[str, BeforeValidator(_text)]


class LogLine(ResponseModel):
    """One line of a job's log: its number, and the fields of the structured log entry."""

    model_config = ConfigDict(extra="allow")

    seq: int
    timestamp: LogText | SkipJsonSchema[None] = None
    level: LogText | SkipJsonSchema[None] = None
    event: LogText | SkipJsonSchema[None] = None


class JobLog(ResponseModel):
    """A page of a job's log."""

    lines: list[LogLine]
    job_id: str
    status: JobState
    next_after: int | None = Field(description="Pass as `after` for the rest of the log")


class Script(ResponseModel):
    script_id: str
    name: str
    description: str
    triggerable: bool = Field(description="Whether the calling API key may trigger it (its "
                                          "jobs:trigger scope and its scripts patterns)")
    language: Literal["python", "syncjs"] = Field(description=(
        "`python` (<id>.py) or `syncjs` (<id>.js, run by the embedded JavaScript engine)"))


class ScriptList(ResponseModel):
    scripts: list[Script]


class Me(ResponseModel):
    """The calling API key: its name, the scopes it holds in effect (``admin`` holds them all)
    and the glob patterns of the scripts it may trigger."""

    name: str
    scopes: list[str]
    scripts: list[str]


class JobCounts(ResponseModel):
    running: int
    queued: int


class ReportCounts(ResponseModel):
    pending: int


class Health(ResponseModel):
    """``reports`` is there when the daemon delivers reports."""

    status: Literal["ok", "draining"]
    version: str
    uptime_seconds: float
    jobs: JobCounts
    reports: ReportCounts | SkipJsonSchema[None] = None


class ThroughputBucket(ResponseModel):
    start: Timestamp = Field(description="Start of the minute")
    bytes: NonNegativeInt = Field(description="Bytes written by transfers in that minute")


class Throughput(ResponseModel):
    """Bytes transferred per minute over the last hour, oldest first; the last bucket is the
    current minute, still counting. Kept in memory: a restart starts it empty."""

    bucket_seconds: int
    buckets: list[ThroughputBucket]
    total_bytes: NonNegativeInt


class Session(ResponseModel):
    """A console sign-in. The session token itself travels only in its HttpOnly cookie."""

    name: str = Field(description="The API key the session speaks for")
    csrf_token: str = Field(description="Send in X-CSRF-Token with every POST or DELETE made "
                                        "with the session cookie")
    expires_at: Timestamp


class SignedOut(ResponseModel):
    status: Literal["signed_out"]


class FailedFile(ResponseModel):
    """A file whose job failed: left in place, not fired again until it changes or is
    retried (`POST /v1/triggers/{name}/retry`)."""

    path: str
    size: int | None
    mtime: float | None
    job_id: str | None = Field(description="The failed job (null: it could not be submitted)")
    error: str | None
    attempt: int = Field(description="1, plus one per retry")
    failed_at: Timestamp


Setting = StrictStr | StrictBool | StrictInt | StrictFloat | None


class Trigger(ResponseModel):
    """A schedule or watch trigger. `state` is `error` while its last poll, fire or after step
    failed (`lastError` says why; it is retried with backoff). `pendingFiles` counts files a
    watch has seen that are not stable yet. List rows leave out `failedFiles`."""

    name: str
    type: Literal["schedule", "watch"]
    state: Literal["active", "paused", "error"]
    script: str
    last_fired_at: Timestamp | None
    next_fire_at: Timestamp | None = Field(description=(
        "A schedule's next due time; a watch's next stability deadline (null: none pending)"))
    last_error: str | None
    pending_files: NonNegativeInt
    failed_count: NonNegativeInt = Field(description="Files whose job failed (watches)")
    failed_files: list[FailedFile] = Field(default_factory=list, description=(
        "The newest 100 of them"))
    settings: dict[str, Setting] = Field(description=(
        "The trigger's own settings: cron, everyS, timezone, overlap; or vfs, path, pattern, "
        "recursive, after and mode (inotify or poll)"))


class TriggerList(ResponseModel):
    triggers: list[Trigger]


class TriggerRun(ResponseModel):
    """What `run` did: a schedule fires now (`submitted`, or `queued` behind a running job
    with overlap = queue); a watch lists its directory now (`scanning`)."""

    name: str
    outcome: Literal["submitted", "queued", "scanning"]
    job_id: str | None
    detail: str


class TriggerRetry(ResponseModel):
    """A failed file fired again."""

    name: str
    path: str
    job_id: str | None
    attempt: int


class Livez(ResponseModel):
    status: Literal["ok"]


class ErrorDetail(ResponseModel):
    code: str
    message: str


class Error(ResponseModel):
    error: ErrorDetail
