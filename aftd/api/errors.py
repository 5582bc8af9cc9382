"""What leaves the API as JSON: a handler's :class:`Reply`, and errors as
``{"error": {"code": ..., "message": ...}}`` with the right HTTP status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aftd import strictjson
from aftd.api.responses import Error, ErrorDetail, ResponseModel
from aftd.redact import scrub, scrub_obj

__all__ = ["ApiError", "Reply", "encode", "error_response", "json_response"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def encode(data: Any) -> str:
    """Every body leaves through the secret scrubber, as strict JSON."""
    if isinstance(data, ResponseModel):
        data = data.to_json_data()
    return strictjson.dumps(scrub_obj(data))


@dataclass(frozen=True)
class Reply:
    """A handler's answer: a response model (already encoded), its status and headers. The
    route checks the model is the one it documents for that status."""

    model: type[ResponseModel]
    text: str
    status: int = 200
    headers: Mapping[str, str] | None = None

    @classmethod
    def of(cls, body: ResponseModel, status: int = 200,
           headers: Mapping[str, str] | None = None) -> Reply:
        return cls(type(body), encode(body), status, headers)

    def response(self) -> web.Response:
        return web.Response(text=self.text, status=self.status, content_type="application/json",
                            headers=self.headers)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    return web.Response(text=encode(data), status=status, content_type="application/json",
                        headers=headers)


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    body = Error(error=ErrorDetail(code=code, message=scrub(message)))
    return Reply.of(body, status, headers).response()
