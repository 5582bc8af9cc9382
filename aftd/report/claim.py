"""Parsing a claim answer from an orchestrator: untrusted input, checked field by field.

A claim answer is a JSON object naming where the work comes from and where it goes::

    {"sourceVfs": "partner", "sourcePath": "/out/batch-7.csv",
     "destVfs": "archive", "destDir": "/in"}

Unknown extra fields are ignored (orchestrators add fields over time). Whether the VFS names are
configured is checked by the caller; whether a path stays inside its VFS root is checked by the
VFS layer, which refuses escapes with a ``TransferError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aftd.errors import AftdError

__all__ = ["MAX_CLAIM_BYTES", "Claim", "ClaimError", "parse_claim", "parse_claim_obj"]

MAX_CLAIM_BYTES = 64 * 1024
_MAX_FIELD_CHARS = 4096
# (JSON name, attribute name)
_FIELDS = (("sourceVfs", "source_vfs"), ("sourcePath", "source_path"),
           ("destVfs", "dest_vfs"), ("destDir", "dest_dir"))


class ClaimError(AftdError):
    """The claim answer is unusable; ``field`` names the offending field when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"claim answer: {field}: {message}" if field else
                         f"claim answer: {message}")


@dataclass(frozen=True)
class Claim:
    source_vfs: str
    source_path: str
    dest_vfs: str
    dest_dir: str


def parse_claim(raw: str | bytes) -> Claim:
    """Parse the body of a claim answer; raise :class:`ClaimError` naming what is wrong."""
    if len(raw) > MAX_CLAIM_BYTES:
        raise ClaimError(f"is larger than {MAX_CLAIM_BYTES} bytes")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ClaimError("is not UTF-8 text") from None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        # The position helps; the body itself is not echoed (it is the orchestrator's data).
        raise ClaimError(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")\
            from None
    except RecursionError:
        raise ClaimError("is not valid JSON (nested too deeply)") from None
    return parse_claim_obj(obj)


def parse_claim_obj(obj: object) -> Claim:
    """Validate an already-decoded claim answer."""
    if not isinstance(obj, dict):
        raise ClaimError(f"must be a JSON object, got {_json_type(obj)}")
    values = {attr: _field(obj, name) for name, attr in _FIELDS}
    return Claim(**values)


def _field(obj: dict[str, object], name: str) -> str:
    if name not in obj:
        raise ClaimError("is missing", field=name)
    value = obj[name]
    if not isinstance(value, str):
        raise ClaimError(f"must be a string, got {_json_type(value)}", field=name)
    if not value.strip():
        raise ClaimError("must not be empty", field=name)
    if len(value) > _MAX_FIELD_CHARS:
        raise ClaimError(f"is longer than {_MAX_FIELD_CHARS} characters", field=name)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ClaimError("contains control characters", field=name)
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
