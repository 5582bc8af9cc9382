"""Config types registered only by the tests: a later backend and two trigger types, written the
way their real modules will be (a module of their own, registered in a TypeRegistry)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Strict, model_validator

from aftd.configmodel import ConfigModel, InvalidKey, Strings, TypeRegistry
from aftd.vfs.config import VfsConfig


class S3Config(VfsConfig):
    type: Literal["s3"]
    bucket: str = Field(min_length=1)
    prefix: str = ""
    access_key_secret: str = ""
    part_size_mib: int = Field(16, ge=5, le=5120)
    addressing: Literal["path", "virtual"] = "virtual"


class TriggerConfig(ConfigModel):
    name: str = Field(min_length=1)
    type: str
    script: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class ScheduleTrigger(TriggerConfig):
    type: Literal["schedule"]
    cron: str = ""
    every_s: float = Field(0, ge=0)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleTrigger:
        if bool(self.cron) == bool(self.every_s):
            raise InvalidKey("cron", "exactly one of cron or every_s is required")
        return self


class WatchTrigger(TriggerConfig):
    type: Literal["watch"]
    vfs: str = Field(min_length=1)
    path: str = ""
    pattern: str = "*"
    ignore: Strings = ()


TRIGGER_TYPES = TypeRegistry("triggers", {
    "schedule": "tests.core.config_types:ScheduleTrigger",
    "watch": "tests.core.config_types:WatchTrigger",
})


class Root(ConfigModel):
    triggers: Annotated[tuple[Annotated[TriggerConfig, TRIGGER_TYPES], ...], Strict(False)] = ()
