"""What a notification says: the event as a JSON object, or as Slack-compatible text.

A body is rendered once, when the event happens, and stored: every retry sends the same bytes
(so a receiver's HMAC check and its deduplication see one message). Values that came from a
job (its error) pass the secret scrubber again on the way out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aftd import strictjson
from aftd.jobs.model import Job, iso
from aftd.redact import scrub, scrub_obj
from aftd.units import human_bytes

__all__ = ["body", "human_bytes", "job_link", "job_payload", "slack_text"]

_ICONS = {"job.failed": ":x:", "job.succeeded": ":white_check_mark:",
          "job.cancelled": ":no_entry_sign:", "job.interrupted": ":warning:",
          "report.abandoned": ":mailbox_with_mail:", "trigger.error": ":alarm_clock:"}
_ERROR_CHARS = 1000


def job_link(base_url: str, job_id: str) -> str:
    """The job's page in the browser console."""
    return f"{base_url}/ui/jobs/{job_id}"


def job_payload(job: Job, base_url: str) -> dict[str, Any]:
    """The job's part of a ``job.*`` or ``report.abandoned`` event."""
    end = job.finished_at
    duration = job.duration_s(end) if end is not None else None
    return {
        "jobId": job.id,
        "scriptId": job.script_id,
        "trigger": job.trigger,
        "status": str(job.status),
        "exitCode": job.exit_code,
        "error": _short(job.error),
        "durationS": round(duration, 3) if duration is not None and math.isfinite(duration)
        else None,
        "bytes": job.progress.bytes_done,
        "files": job.progress.files_done,
        "createdAt": iso(job.created_at),
        "startedAt": iso(job.started_at),
        "finishedAt": iso(end),
        "url": job_link(base_url, job.id),
    }


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    text = scrub(text)
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "…"


def body(fmt: str, event: str, notify: str, occurred_at: float,
         details: Mapping[str, Any]) -> str:
    """The stored body: ``{"event", "notification", "occurredAt", ...details}`` as JSON, or for
    ``slack`` a ``{"text": ...}`` message."""
    data = {"event": event, "notification": notify, "occurredAt": iso(occurred_at),
            **scrub_obj(dict(details))}
    if fmt == "slack":
        data = {"text": slack_text(data)}
    return strictjson.dumps(data, sort_keys=True)


def _esc(value: Any) -> str:
    # Slack's three control characters; everything else is shown as it is.
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(data: Mapping[str, Any]) -> str:
    """One line (two with an error) in Slack's markup: the event, a link to the job, what
    moved, how long it took."""
    event = str(data["event"])
    icon = _ICONS.get(event, ":bell:")
    if event.startswith("job."):
        head = f"{icon} Job {_job_ref(data)} of `{_esc(data.get('scriptId'))}` " \
               f"{_esc(data.get('status'))}"
        if data.get("durationS") is not None:
            head += f" after {float(data['durationS']):.1f} s"
        head += f" ({human_bytes(int(data.get('bytes') or 0))}, {data.get('files') or 0} files)"
    elif event == "report.abandoned":
        head = f"{icon} Report of job {_job_ref(data)} of `{_esc(data.get('scriptId'))}` " \
               f"abandoned after {data.get('attempts')} attempts"
    else:
        what = data.get("trigger") or data.get("scriptId") or "?"
        head = f"{icon} Trigger `{_esc(what)}` failed"
        if data.get("jobId"):
            head += f" (job {_job_ref(data)})"
    error = data.get("error")
    return head + ("\n> " + _esc(error).replace("\n", "\n> ") if error else "")


def _job_ref(data: Mapping[str, Any]) -> str:
    job_id = str(data.get("jobId") or "?")
    url = data.get("url")
    return f"<{_esc(url)}|{_esc(job_id[:8])}>" if url else f"`{_esc(job_id)}`"
