"""Exception types shared by every layer.

Messages are written for operators: they name the thing that was wrong (file, key, field,
VFS, path) and never contain a secret value.
"""

from __future__ import annotations

__all__ = ["AftdError", "ConfigError", "ParamError", "SecretError", "TransferError"]


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
        super().__init__(message)
