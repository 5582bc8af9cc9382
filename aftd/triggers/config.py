"""``[[triggers]]`` entries: the keys every trigger has, and the registry of trigger types.

Like ``[vfs.NAME]`` entries, a trigger is a union discriminated by ``type``: each type's keys
live in a module of its own (``aftd/triggers/<type>_config.py``) registered in
:data:`TRIGGER_TYPES`. What a single entry cannot check alone (unique names, that the VFS and
the script exist) is checked by the whole config (:mod:`aftd.config`), so every error still
names ``triggers[N].key``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import (
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
)

from aftd.configmodel import (
    HOST_TAG_PATTERN,
    PARAM_NAME_PATTERN,
    ConfigModel,
    InvalidKey,
    TypeRegistry,
)

__all__ = ["NAME_PATTERN", "TRIGGER_TYPES", "TriggerConfig", "TriggerEntries", "param_name_ok"]

TRIGGER_TYPES = TypeRegistry("triggers", {
    "schedule": "aftd.triggers.schedule_config:ScheduleTriggerConfig",
    "watch": "aftd.triggers.watch_config:WatchTriggerConfig",
})
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
_PARAM_NAME = re.compile(PARAM_NAME_PATTERN)
_NAME = re.compile(NAME_PATTERN)
ParamValue = StrictStr | StrictBool | StrictInt | StrictFloat


def param_name_ok(name: str) -> bool:
    return bool(_PARAM_NAME.match(name))


class TriggerConfig(ConfigModel):
    """The keys of every ``[[triggers]]`` entry; each trigger type's model adds its own."""

    # Parameters a fired job gets from the trigger itself; a configured param may not take
    # one of these names (each type adds its own).
    RESERVED: ClassVar[tuple[str, ...]] = ("trigger",)

    name: str = Field(description="unique among the triggers; letters, "
                      "digits, _ . - (shown in the job's `trigger`)", examples=["nightly-sync"])
    type: str = Field(description="the kind of trigger")
    script: str = Field(min_length=1, description="the id of the script a fire runs (its file "
                        "stem in scripts_dir)", examples=["sync"])
    params: dict[str, ParamValue] = Field(default_factory=dict, description=(
        "parameters every fired job gets, besides the trigger's own (an inline table)"))
    host_tags: Annotated[tuple[Annotated[str, StringConstraints(pattern=HOST_TAG_PATTERN)], ...],
                         Strict(False)] = Field((), description=(
        "in a fleet, a fired job runs only on a host having all of these [host] tags, besides "
        "its script's REQUIRES_TAGS"), examples=[["vfs:archive"]])

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be 1-128 letters, digits, _ . or -, got {value[:140]!r}")
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not param_name_ok(name):
                raise InvalidKey(name, "invalid parameter name (letters, digits, "
                                 "_ . -; starting with a letter or _)")
            if name in cls.RESERVED:
                raise InvalidKey(name, f"is set by the trigger itself (reserved: "
                                 f"{', '.join(cls.RESERVED)})")
        return value


TriggerEntries = Annotated[tuple[Annotated[TriggerConfig, TRIGGER_TYPES], ...], Strict(False)]
