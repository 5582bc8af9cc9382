"""Exception types shared by every layer.

Messages are written for operators: they name the thing that was wrong (file, key, field,
VFS, path) and never contain a secret value.
"""

from __future__ import annotations

__all__ = ["AftdError", "ConfigError", "ParamError", "SecretError", "StoreError",
           "StoreUnavailable", "TransferError"]


class AftdError(Exception):
    """Base of every error aftd raises on purpose."""


class ConfigError(AftdError):
    """The configuration is invalid; the message names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(f"{file}: {key}: {reason}")


class ParamError(AftdError, KeyError):
    """A script asked for a job parameter that was not supplied (or had the wrong type)."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "parameter error"


class SecretError(AftdError):
    """A secret could not be resolved; the message names the secret, never its value."""


class TransferError(AftdError):
    """A file operation or copy failed; the message names the VFS and the path."""

    def __init__(self, message: str, *, vfs: str = "", path: str = "") -> None:
        self.vfs = vfs
        self.path = path
        # Destination paths a tree copy had delivered before it stopped at this error.
        self.delivered: list[str] = []
        super().__init__(message)


class StoreError(OSError):
    """The job store failed to read or write (the message names the cause, never a password).

    An :class:`OSError` on purpose: the code that retries store writes (the runner, the outbox,
    the claim helpers) already treats an ``OSError`` (a full disk) like a locked SQLite file,
    and a lost database connection is the same kind of trouble: wait and retry."""


class StoreUnavailable(StoreError):
    """The shared database cannot be reached right now (down, restarting, network cut)."""

