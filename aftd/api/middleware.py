"""Request middlewares: request ids, JSON errors for everything, API-key authentication."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from aftd.api.errors import ApiError, error_response
from aftd.api.state import STATE

__all__ = ["PUBLIC_PATHS", "auth_middleware", "error_middleware", "request_id_middleware"]

log = structlog.get_logger("aftd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The unauthenticated liveness probe answers only "ok": it reveals nothing else.
PUBLIC_PATHS = frozenset({"/livez"})


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
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
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        return error_response(500, "internal", "internal error; see the daemon log")


def _http_exception(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    if exc.status == 404:
        return error_response(404, "not_found", f"no route {request.method} {request.path}")
    if exc.status == 405:
        allowed: set[str] = getattr(exc, "allowed_methods", set())
        hdrs = {"Allow": ", ".join(sorted(allowed))} if allowed else None
        return error_response(405, "method_not_allowed",
                              f"{request.method} is not allowed on {request.path}", hdrs)
    if exc.status == 413:
        return error_response(413, "too_large", f"request body too large: {exc.text}")
    if exc.status < 400:
        raise exc
    return error_response(exc.status, "http_error", exc.reason or str(exc.status))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    if request.path in PUBLIC_PATHS or (request.path == "/metrics" and state.metrics_open):
        return await handler(request)
    result = state.keyring.authenticate(request.headers.get("X-API-Key"), request.remote)
    if result.key is None:
        missing = not request.headers.get("X-API-Key")
        return error_response(401, "unauthorized",
                              "missing X-API-Key header" if missing else "invalid API key")
    if not result.allowed:
        log.warning("api_key_address_refused", key=result.key.name, remote=request.remote)
        return error_response(403, "forbidden",
                              f"API key {result.key.name!r} is not allowed from {request.remote}")
    with structlog.contextvars.bound_contextvars(api_key=result.key.name):
        return await handler(request)
