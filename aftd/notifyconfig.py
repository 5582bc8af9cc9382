"""``[[notify]]``: where pushed notifications go, for which events and scripts, in which format.

Beside :mod:`aftd.config` rather than inside :mod:`aftd.notify`, because the notification code
sits above the config (it imports the job layer), and the config must not import it back.
Imports nothing heavy: every config load reads it.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, Strict, field_validator, model_validator

from aftd.configmodel import ConfigModel, InvalidKey
from aftd.errors import SecretError
from aftd.scopes import script_allowed
from aftd.secrets.base import parse_name

__all__ = ["EVENTS", "JOB_EVENTS", "EventName", "NotifyConfig", "check_url"]

EventName = Literal["job.failed", "job.succeeded", "job.cancelled", "job.interrupted",
                    "report.abandoned", "trigger.error"]
EVENTS: tuple[EventName, ...] = ("job.failed", "job.succeeded", "job.cancelled",
                                 "job.interrupted", "report.abandoned", "trigger.error")
# A job's final state names its event: job.<state>.
JOB_EVENTS: tuple[EventName, ...] = EVENTS[:4]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_url(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL a notification can be POSTed to (None if it is).
    The reason never quotes the value: it may come from a secret."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


class NotifyConfig(ConfigModel):
    """A pushed notification: a POST to ``url`` for each matching event, delivered through the
    durable outbox (retries and deadline as ``[reports]``)."""

    # Values for the generated example config (aftd.config_docs).
    EXAMPLE: ClassVar[dict[str, str]] = {"url": "https://hooks.example/aftd",
                                         "hmac_secret": "notify-signing-key"}

    name: str = Field(description="names the notification in logs and its Idempotency-Key",
                      examples=["ops-chat"])
    url: str = Field("", description="where to POST (or url_secret)",
                     examples=["https://hooks.example/aftd"])
    url_secret: str = Field("", description=(
        "name of a secret that holds the URL, when it carries a token (instead of url)"))
    events: Annotated[tuple[EventName, ...], Strict(False)] = Field(description=(
        "any of job.failed, job.succeeded, job.cancelled, job.interrupted, report.abandoned, "
        "trigger.error"), examples=[["job.failed", "report.abandoned", "trigger.error"]])
    scripts: Annotated[tuple[str, ...], Strict(False)] = Field(("*",), description=(
        "glob patterns of the script ids whose events are sent"))
    format: Literal["json", "slack"] = Field("json", description=(
        'json: the event as a JSON object; slack: a Slack-compatible {"text": ...}'))
    hmac_secret: str = Field("", description=(
        "name of a secret to sign the body with: X-Aftd-Signature: sha256=HEX, the HMAC-SHA256 "
        "of the body"))

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '_', '-' or '.', starting with a "
                             f"letter or digit; got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = check_url(value) if value else None
        if problem:
            raise ValueError(f"{problem}, got {value[:200]!r}")
        return value

    @field_validator("url_secret", "hmac_secret")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        if value:
            try:
                parse_name(value)
            except SecretError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("events", "scripts")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must not be empty")
        for i, item in enumerate(value):
            if not item:
                raise InvalidKey(f"[{i}]", "must not be empty")
        return value

    @model_validator(mode="after")
    def _one_url(self) -> NotifyConfig:
        if bool(self.url) == bool(self.url_secret):
            raise InvalidKey("url", "set exactly one of url and url_secret")
        return self

    def wants(self, event: str, script_id: str | None) -> bool:
        """Whether this entry sends ``event`` of a job of ``script_id`` (None: no script)."""
        return event in self.events and script_allowed(self.scripts, script_id or "")
