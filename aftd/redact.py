"""Process-wide registry of secret values that must never be shown.

The secrets layer registers every value it resolves; logging, the job log store, API responses
and error messages pass text through :func:`scrub` before it leaves the process.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "REDACTOR", "Redactor", "register", "scrub", "scrub_obj"]

MASK = "***"
# Very short values would mask ordinary words ("a", "on"); they are not credentials anyway.
_MIN_LEN = 4


class Redactor:
    """Holds the known secret values and replaces them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register(self, value: str) -> None:
        """Remember ``value`` (and its line-wise parts) so later output is scrubbed of it."""
        parts = {value, *(line.strip() for line in value.splitlines())}
        with self._lock:
            new = {p for p in parts if len(p) >= _MIN_LEN} - self._values
            if not new:
                return
            self._values |= new
            # Longest first so a value that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def scrub_obj(self, obj: Any) -> Any:
        """Return a copy of a JSON-like object with every string scrubbed."""
        if self._pattern is None:
            return obj
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, Mapping):
            return {self.scrub(str(k)): self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.scrub_obj(v) for v in obj]
        return obj

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


REDACTOR = Redactor()
register = REDACTOR.register
scrub = REDACTOR.scrub
scrub_obj = REDACTOR.scrub_obj
