"""Request middlewares, outermost first: connection deadlines, request ids, JSON errors for
everything, header hygiene, authentication (an API key, or the console's session cookie with
its CSRF token), and the request body read under a deadline.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from aftd.api.auth import attach_key
from aftd.api.caller import CALLER, Caller
from aftd.api.errors import ApiError, error_response
from aftd.api.state import CONNECTIONS, LIMITS, STATE, ApiState
from aftd.apikeys import AuthResult
from aftd.authconfig import ApiKeyConfig
from aftd.errors import StoreError
from aftd.sessions import CSRF_HEADER, SESSION_COOKIE

__all__ = ["CONSOLE_PREFIX", "PUBLIC_PATHS", "auth_middleware", "body_middleware",
           "connection_middleware", "error_middleware", "header_middleware",
           "request_id_middleware"]

log = structlog.get_logger("aftd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The unauthenticated liveness probe answers only "ok": it reveals nothing else.
PUBLIC_PATHS = frozenset({"/livez"})
# The console's pages and assets are the same for everyone and hold no data: the data comes
# from the API, signed in.
CONSOLE_PREFIX = "/ui"
# Methods that change nothing: a console request with any other method needs its CSRF token.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A client's request id is echoed in a response header and logged: keep it to safe characters.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
# Other methods never read a body: aiohttp discards one, for at most its lingering time.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard a handler runs, so its idle deadline pauses."""
    tracker = request.app.get(CONNECTIONS)
    guard = tracker.guard_for(request.protocol) if tracker is not None else None
    if guard is None:
        return await handler(request)
    guard.request_started()
    try:
        return await handler(request)
    finally:
        guard.request_finished()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=rid):
        response = await handler(request)
        if not response.prepared:
            response.headers["X-Request-Id"] = rid
        return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        return _http_exception(request, exc)
    except ConnectionError as exc:
        # The client went away mid-request: nothing to answer, nothing to debug.
        log.info("client_disconnected", path=request.path, method=request.method,
                 error_type=type(exc).__name__)
        return _closing(error_response(400, "client_disconnected", "connection lost"))
    except StoreError as exc:
        # The shared database is down or restarting: the client retries later.
        log.warning("request_store_unavailable", path=request.path, method=request.method,
                    error=str(exc))
        return error_response(503, "store_unavailable", "the job store is unavailable; "
                                                        "retry later")
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        return error_response(500, "internal", "internal error; see the daemon log")


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


def _http_exception(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    if exc.status == 404:
        return error_response(404, "not_found", f"no route {request.method} {request.path}")
    if exc.status == 405:
        allowed: set[str] = getattr(exc, "allowed_methods", set())
        hdrs = {"Allow": ", ".join(sorted(allowed))} if allowed else None
        return error_response(405, "method_not_allowed",
                              f"{request.method} is not allowed on {request.path}", hdrs)
    if exc.status == 413:
        limit = request.app[LIMITS].max_body_bytes
        return _closing(error_response(
            413, "too_large", f"request body too large: the limit is server.max_body_bytes = "
                              f"{limit} bytes"))
    if exc.status < 400:
        raise exc
    return error_response(exc.status, "http_error", exc.reason or str(exc.status))


@web.middleware
async def header_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Header values that are not valid UTF-8 are refused before anything reads them."""
    for name, value in request.headers.items():
        if not value.isascii() and not _is_utf8(value):
            raise ApiError(400, "bad_header", f"header {_safe_name(name)} is not valid UTF-8")
    return await handler(request)


def _is_utf8(text: str) -> bool:
    # aiohttp decodes header bytes with surrogateescape: invalid bytes become lone surrogates.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _safe_name(name: str) -> str:
    return name if name.isascii() and name.isprintable() else repr(name)


def _public(request: web.Request, state: ApiState) -> bool:
    path = request.path
    return (path in PUBLIC_PATHS or (path == "/metrics" and state.metrics_open)
            or path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    if _public(request, state):
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE)
    if "X-API-Key" in request.headers or not token or state.sessions is None:
        caller = _by_key(request, state)
    else:
        caller = _by_session(request, state, token)
    attach_key(request, caller.key)
    reset = CALLER.set(caller)
    try:
        with structlog.contextvars.bound_contextvars(api_key=caller.key.name):
            return await handler(request)
    finally:
        CALLER.reset(reset)


def _by_key(request: web.Request, state: ApiState) -> Caller:
    result = state.keyring.authenticate(request.headers.get("X-API-Key"), request.remote)
    if result.key is None:
        missing = not request.headers.get("X-API-Key")
        raise ApiError(401, "unauthorized",
                       "missing X-API-Key header" if missing else "invalid API key")
    return Caller(_allowed(request, result))


def _by_session(request: web.Request, state: ApiState, token: str) -> Caller:
    """The console's cookie: a live session whose key is still configured (with the scopes
    and allow-list it has now), and the session's CSRF token on anything but a read."""
    assert state.sessions is not None
    session = state.sessions.get(token)
    if session is None:
        raise ApiError(401, "unauthorized", "the console session has expired or was signed "
                                            "out; sign in again")
    result = state.keyring.by_digest(session.key_sha256, request.remote)
    if result.key is None:
        state.sessions.drop(token)
        raise ApiError(401, "unauthorized", "the API key of this console session is no longer "
                                            "configured; sign in again")
    key = _allowed(request, result)
    if request.method not in _SAFE_METHODS and not session.csrf_ok(
            request.headers.get(CSRF_HEADER)):
        log.warning("csrf_refused", key=key.name, method=request.method, path=request.path)
        raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header: a request "
                                           "that changes something needs the session's token")
    return Caller(key, session, token)


def _allowed(request: web.Request, result: AuthResult) -> ApiKeyConfig:
    assert result.key is not None
    if not result.allowed:
        log.warning("api_key_address_refused", key=result.key.name, remote=request.remote)
        raise ApiError(403, "forbidden",
                       f"API key {result.key.name!r} is not allowed from {request.remote}")
    return result.key


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read an authenticated request's body whole, within ``server.body_timeout_s``.

    aiohttp keeps the bytes, so the handler's own ``request.read()`` returns them at once.
    """
    if request.body_exists and request.method in _BODY_METHODS:
        timeout = request.app[LIMITS].body_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await request.read()
        except TimeoutError:
            log.info("request_body_timeout", path=request.path, timeout_s=timeout)
            return _closing(error_response(
                408, "body_timeout",
                f"request body not received within server.body_timeout_s = {timeout:g} s"))
        except (ConnectionError, web.RequestPayloadError) as exc:
            log.info("request_body_incomplete", path=request.path,
                     error_type=type(exc).__name__)
            return _closing(error_response(400, "incomplete_body",
                                           "the request body ended early"))
    return await handler(request)
