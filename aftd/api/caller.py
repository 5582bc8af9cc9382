"""Who is calling: the API key a request was authenticated with, and the console session it
came through, if any. Set by the auth middleware for the handler's task (a context variable, so
it needs no per-request storage and ends with the request)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from aftd.authconfig import ApiKeyConfig
from aftd.sessions import Session

__all__ = ["CALLER", "Caller", "current_caller"]


@dataclass(frozen=True)
class Caller:
    key: ApiKeyConfig
    session: Session | None = None  # set when the request came with the console's cookie
    session_token: str | None = None


CALLER: ContextVar[Caller | None] = ContextVar("aftd_caller", default=None)


def current_caller() -> Caller:
    caller = CALLER.get()
    if caller is None:
        raise RuntimeError("no authenticated caller: the route is public")
    return caller
