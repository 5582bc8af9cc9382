"""The aiohttp application: middlewares and routes around an :class:`ApiState`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from aftd.api import jobs, misc, reports, session, triggers
from aftd.api.headers import add_security_headers
from aftd.api.middleware import (
    auth_middleware,
    body_middleware,
    connection_middleware,
    error_middleware,
    header_middleware,
    request_id_middleware,
)
from aftd.api.registry import Registry
from aftd.api.state import LIMITS, REGISTRY, STATE, ApiState
from aftd.serverconfig import ServerConfig

__all__ = ["ROUTES", "build_app"]

# Every route of the API, in the order the document lists them.
ROUTES = Registry(jobs.routes, reports.routes, triggers.routes, misc.routes, session.routes)


def build_app(state: ApiState, limits: ServerConfig,
              extra_middlewares: Sequence[Any] = ()) -> web.Application:
    app = web.Application(
        client_max_size=limits.max_body_bytes,
        middlewares=[connection_middleware, *extra_middlewares, request_id_middleware,
                     error_middleware, header_middleware, auth_middleware, body_middleware],
    )
    app[STATE] = state
    app[LIMITS] = limits
    app[REGISTRY] = ROUTES
    app.on_response_prepare.append(add_security_headers)
    ROUTES.add_to(app)
    return app
