"""The aiohttp application: middlewares and routes around an :class:`ApiState`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from aftd.api import jobs, misc
from aftd.api.middleware import auth_middleware, error_middleware, request_id_middleware
from aftd.api.state import STATE, ApiState

__all__ = ["build_app"]


def build_app(state: ApiState, max_body_bytes: int,
              extra_middlewares: Sequence[Any] = ()) -> web.Application:
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[*extra_middlewares, request_id_middleware, error_middleware,
                     auth_middleware],
    )
    app[STATE] = state
    app.add_routes(jobs.routes)
    app.add_routes(misc.routes)
    return app
