"""``/v1/session``: the operator console's sign-in, session and sign-out.

Signing in takes the API key once (in ``X-API-Key``, as every route) and answers with a session
cookie (``HttpOnly``, ``Secure``, ``SameSite=Strict``, ``Max-Age``) and the session's CSRF token,
which the console keeps in memory and sends in ``X-CSRF-Token``. The cookie then authenticates
the console's API calls with the scopes of the key that signed in (README, "Operator console").
"""

from __future__ import annotations

import structlog
from aiohttp import web

from aftd.api.caller import current_caller
from aftd.api.errors import ApiError, Reply
from aftd.api.registry import Registry, json_body
from aftd.api.responses import Session, SignedOut
from aftd.api.state import STATE
from aftd.jobs.model import iso
from aftd.scopes import ANY_KEY
from aftd.sessions import SESSION_COOKIE, SessionStore
from aftd.sessions import Session as SessionRecord

__all__ = ["routes", "session_cookie"]

log = structlog.get_logger("aftd.api")

routes = Registry()
_COOKIE_HEADERS = {"Set-Cookie": "The session cookie (HttpOnly, Secure, SameSite=Strict)"}


def session_cookie(token: str, max_age_s: int) -> str:
    """The cookie's header value; an empty token with max age 0 removes it."""
    return (f"{SESSION_COOKIE}={token}; Max-Age={max_age_s}; Path=/; Secure; HttpOnly; "
            "SameSite=Strict")


def _sessions(request: web.Request) -> SessionStore:
    store = request.app[STATE].sessions
    if store is None:
        raise ApiError(404, "console_disabled", "the console is disabled ([console] enabled)")
    return store


def _view(session: SessionRecord) -> Session:
    return Session(name=session.key_name, csrf_token=session.csrf_token,
                   expires_at=iso(session.expires_at))


def _current(request: web.Request) -> SessionRecord:
    _sessions(request)
    session = current_caller().session
    if session is None:
        raise ApiError(404, "no_session", "this request carries no console session cookie "
                                          "(sign in with POST /v1/session)")
    return session


@routes.route("POST", "/v1/session", "signIn", "Sign in to the console with an API key",
              {201: json_body(Session, "Signed in; the cookie carries the session",
                              headers=_COOKIE_HEADERS)},
              errors=frozenset({404}), scope=ANY_KEY,
              description="Authenticate with `X-API-Key`; the answer sets the session cookie. "
                          "The console's later calls send the cookie instead of the key, and "
                          "`X-CSRF-Token` on every POST and DELETE.")
async def sign_in(request: web.Request) -> Reply:
    store = _sessions(request)
    caller = current_caller()
    # A request that came with an old session cookie (and its key) signs that one out first.
    store.drop(request.cookies.get(SESSION_COOKIE))
    token, session = store.create(caller.key.name, caller.key.sha256)
    log.info("console_signed_in", key=caller.key.name, sessions=len(store))
    cookie = session_cookie(token, int(store.ttl_s))
    return Reply.of(_view(session), 201, {"Set-Cookie": cookie})


@routes.route("GET", "/v1/session", "getSession", "The console session of this request",
              {200: json_body(Session, "The session")}, errors=frozenset({404}), scope=ANY_KEY,
              description="404 when the request came without a session cookie.")
async def get_session(request: web.Request) -> Reply:
    return Reply.of(_view(_current(request)))


@routes.route("DELETE", "/v1/session", "signOut", "Sign out of the console",
              {200: json_body(SignedOut, "Signed out; the cookie is removed",
                              headers=_COOKIE_HEADERS)},
              errors=frozenset({404}), scope=ANY_KEY, description="Needs `X-CSRF-Token`.")
async def sign_out(request: web.Request) -> Reply:
    session = _current(request)
    _sessions(request).drop(current_caller().session_token)
    log.info("console_signed_out", key=session.key_name)
    return Reply.of(SignedOut(status="signed_out"), 200, {"Set-Cookie": session_cookie("", 0)})
