"""The wire format between the daemon and a script's worker process.

Frames are a 4-byte big-endian length followed by one UTF-8 JSON object. JSON, not pickle: the
daemon decodes what an untrusted script's process sends, and unpickling would let that process
run code in the daemon. Every message has a type ``t``:

worker → daemon
  ``log`` (``level``, ``event``, ``fields``), ``progress`` (absolute ``files_total``,
  ``bytes_total``, ``files_done``, ``bytes_done``), ``transfer`` (``src``, ``dst``, ``files``,
  ``bytes``, ``ok``), ``call`` (``id``, ``op``, ``args``) and ``done`` (``outcome`` ...).
daemon → worker
  ``reply`` (``id`` and ``value``, or ``error`` with ``type`` and ``message``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
from collections.abc import Callable
from typing import Any

from aftd.errors import AftdError, SecretError
from aftd.redact import scrub

__all__ = ["MAX_FRAME", "ProtocolError", "RemoteError", "decode", "encode", "error_from_wire",
           "error_to_wire", "frame_length", "read_frame"]

# Log lines and report bodies are far smaller; a bigger frame is a broken or hostile worker.
MAX_FRAME = 4 << 20
_HEADER = struct.Struct(">I")


class ProtocolError(AftdError):
    """The other side sent something that is not a valid frame."""


class RemoteError(AftdError):
    """An error the daemon answered a call with, of a type the worker does not rebuild."""


def encode(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(body)) + body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode(body: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError("frame is not a JSON object with a type")
    return msg


def frame_length(header: bytes) -> int:
    (n,) = _HEADER.unpack(header)
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
    return int(n)


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("stream ended inside a frame header") from None
        return None
    try:
        body = await reader.readexactly(frame_length(header))
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream ended inside a frame") from None
    return decode(body)


def error_to_wire(exc: BaseException) -> dict[str, str]:
    """An error for a ``reply``, scrubbed: its message may quote a secret of another job."""
    if isinstance(exc, SecretError):
        kind, message = "SecretError", str(exc)
    elif isinstance(exc, AftdError):
        kind, message = "AftdError", str(exc)
    elif isinstance(exc, sqlite3.Error):
        # The outbox's store failed (locked, disk full): the claim helpers tell this apart.
        kind, message = "StoreError", str(exc)
    elif isinstance(exc, OSError):
        kind, message = "OSError", str(exc)
    else:  # an unexpected failure in the daemon: say what it was
        kind, message = "AftdError", f"{type(exc).__name__}: {exc}"
    return {"type": kind, "message": scrub(message)}


_REBUILT: dict[str, Callable[[str], Exception]] = {
    "SecretError": SecretError, "AftdError": AftdError,
    "StoreError": sqlite3.OperationalError, "OSError": OSError,
}


def error_from_wire(err: Any) -> Exception:
    """The exception a ``reply`` error stands for, of the type the caller would see in the
    daemon (a store error stays an ``sqlite3.Error``)."""
    if not isinstance(err, dict):
        return RemoteError("the daemon answered with a malformed error")
    rebuild = _REBUILT.get(str(err.get("type")), RemoteError)
    return rebuild(str(err.get("message", "")))
