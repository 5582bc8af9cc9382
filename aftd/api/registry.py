"""The route table: for each route its method, path, parameters, request model, response models
per status, error statuses and the scope an API key needs to call it. The aiohttp router and
``/v1/openapi.json`` are both built from it, a handler's reply is checked against it, and the
scope is enforced before the handler runs, so neither the document nor the access rules can
drift from the code. A route without a scope cannot be registered unless it is public."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from aftd.api.auth import require_scope
from aftd.api.errors import Reply
from aftd.api.requests import QueryModel, RequestModel
from aftd.api.responses import ResponseModel
from aftd.scopes import ALL_SCOPES, ANY_KEY

__all__ = ["Content", "Handler", "Registry", "Response", "Route"]

Handler = Callable[[web.Request], Awaitable[Reply | web.StreamResponse]]
# A media type's body: a response model, or a JSON schema for what is not JSON (text, a
# document with no model of its own).
Content = type[ResponseModel] | dict[str, Any]

_PATH_PARAM = re.compile(r"\{(\w+)\}")
# Methods whose body the middleware reads: too slow is 408, too large 413.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class Response:
    description: str
    content: Mapping[str, Content]
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description
    links: tuple[str, ...] = ()  # operation ids whose path parameters this body fills

    @property
    def model(self) -> type[ResponseModel] | None:
        body = self.content.get("application/json")
        return body if isinstance(body, type) else None


def json_body(model: type[ResponseModel], description: str, **kw: Any) -> Response:
    return Response(description, {"application/json": model}, **kw)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    responses: Mapping[int, Response]
    errors: frozenset[int] = frozenset()  # the route's own error statuses
    description: str = ""
    body: type[RequestModel] | None = None
    query: type[QueryModel] | None = None
    headers: type[BaseModel] | None = None
    public: bool = False  # no API key needed
    # The scope a key needs (aftd.scopes), ANY_KEY for every valid key; None only if public.
    scope: str | None = None

    def __post_init__(self) -> None:
        where = f"{self.method} {self.path}"
        if self.public:
            if self.scope is not None:
                raise TypeError(f"{where}: a public route needs no scope")
        elif self.scope is None:
            raise TypeError(f"{where}: a route needs scope=... (one of {', '.join(ALL_SCOPES)}, "
                            f"or {ANY_KEY!r} for any valid key) unless public=True")
        elif self.scope != ANY_KEY and self.scope not in ALL_SCOPES:
            raise TypeError(f"{where}: unknown scope {self.scope!r}")
        else:  # a Scope member becomes its plain text, as messages and the document show it
            object.__setattr__(self, "scope", str(self.scope))

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def error_statuses(self) -> list[int]:
        """The route's own, and the middleware's: 400 (a header that is not UTF-8, on every
        route), 401 and 403 (authenticated routes), 408 and 413 (routes that read a body)."""
        common = {400} | ({401, 403} if not self.public else set())
        if self.method in _BODY_METHODS:
            common |= {408, 413}
        return sorted(common | self.errors)

    def check(self, reply: Reply) -> None:
        """A reply whose model is not the one documented for its status is a bug (500)."""
        documented = self.responses.get(reply.status)
        if documented is None or documented.model is not reply.model:
            raise TypeError(f"{self.method} {self.path} answered {reply.status} with "
                            f"{reply.model.__name__}, which its route does not document")

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        if self.scope is not None:
            require_scope(request, self.scope)
        out = await self.handler(request)
        if isinstance(out, web.StreamResponse):
            return out
        self.check(out)
        return out.response()


class Registry:
    """Routes in the order they are declared (the document lists them in that order)."""

    def __init__(self, *parts: Registry) -> None:
        self.routes: list[Route] = [r for part in parts for r in part.routes]

    def route(self, method: str, path: str, operation_id: str, summary: str,
              responses: Mapping[int, Response], **spec: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, operation_id, summary, handler, responses,
                                     **spec))
            return handler
        return register

    def find(self, operation_id: str) -> Route:
        return next(r for r in self.routes if r.operation_id == operation_id)

    def add_to(self, app: web.Application) -> None:
        # web.route, as RouteTableDef does: a GET route answers HEAD too.
        app.add_routes([web.route(r.method, r.path, r.endpoint) for r in self.routes])
