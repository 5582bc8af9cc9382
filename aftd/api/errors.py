"""Errors as JSON: ``{"error": {"code": ..., "message": ...}}`` with the right HTTP status."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from aftd.redact import scrub, scrub_obj

__all__ = ["ApiError", "error_response", "json_response"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    """Every body leaves through the secret scrubber."""
    body = json.dumps(scrub_obj(data), separators=(",", ":"))
    return web.Response(text=body, status=status, content_type="application/json",
                        headers=headers)


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"code": code, "message": scrub(message)}}, status, headers)
