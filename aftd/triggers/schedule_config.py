"""``type = "schedule"``: a job at fixed times (5-field cron in a time zone) or every N seconds."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aftd.configmodel import InvalidKey
from aftd.triggers.config import TriggerConfig

__all__ = ["OVERLAP_POLICIES", "ScheduleTriggerConfig"]

OVERLAP_POLICIES = ("skip", "queue", "allow")


class ScheduleTriggerConfig(TriggerConfig):
    """A job at the times of a 5-field cron expression in a time zone, or every `every_s`
    seconds. Each due time fires once, also across restarts; a fired job gets the params plus
    `trigger` and `scheduledAt` (ISO 8601 UTC)."""

    RESERVED = ("trigger", "scheduledAt")
    EXAMPLE: ClassVar[dict[str, object]] = {"name": "nightly-sync", "cron": "0 2 * * *",
                                            "timezone": "Europe/Berlin", "script": "sync",
                                            "params": {"region": "eu"}}

    type: Literal["schedule"] = Field(description="the kind of trigger; decides the other keys")
    cron: str = Field("", description='5-field cron expression ("minute hour day month '
                      'weekday", or @hourly, @daily ...); or every_s', examples=["0 2 * * *"])
    every_s: float | None = Field(None, ge=1, le=366 * 86400, description=(
        "fire every this many seconds (due times are multiples of it since the epoch, so "
        "they do not move with restarts); or cron"), examples=[300])
    timezone: str = Field("UTC", description="IANA time zone the cron times are in (a time "
                          "a DST change skips fires once at the end of the gap; a time it "
                          "repeats fires once, at its first occurrence)")
    overlap: Literal["skip", "queue", "allow"] = Field("skip", description=(
        "when the previous fire's job still runs: skip this fire, queue it until that job "
        "ends, or allow both"))
    misfire_grace_s: float = Field(300.0, ge=0, description=(
        "a due time missed (daemon down, or late by more than this) runs once at start if it "
        "is at most this old, else it is skipped"))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from aftd.triggers.schedule import load_zone

        load_zone(value)
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if value:
            from aftd.triggers.schedule import check_cron

            check_cron(value)
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleTriggerConfig:
        if bool(self.cron) == (self.every_s is not None):
            raise InvalidKey("cron", "exactly one of cron or every_s is required")
        return self
