"""Small helpers shared by the secrets tests."""

from __future__ import annotations

import uuid
from pathlib import Path

__all__ = ["secret_value", "write_private"]


def secret_value(tag: str = "") -> str:
    """A recognisable, unique secret value (long enough for the redactor)."""
    return f"s3cr3t-{tag}-{uuid.uuid4().hex}"


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path
