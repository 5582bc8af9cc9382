"""Which key called, and whether it may: the route's scope, and the script it triggers.

The auth middleware authenticates the key and attaches it to the request; the route checks its
scope before the handler runs (:meth:`aftd.api.registry.Route.endpoint`), and the trigger
handler checks the script against the key's ``scripts`` globs. A refusal is a 403 that names
the key and what it lacks, never the key itself.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from aftd.api.errors import ApiError
from aftd.authconfig import ApiKeyConfig
from aftd.scopes import grants, script_allowed

__all__ = ["attach_key", "calling_key", "require_scope", "require_script"]

log = structlog.get_logger("aftd.api")

# A request's authenticated key (a plain string key: aiohttp's typed RequestKey needs 3.13).
_KEY = "aftd_api_key"


def attach_key(request: web.Request, key: ApiKeyConfig) -> None:
    request[_KEY] = key


def calling_key(request: web.Request) -> ApiKeyConfig | None:
    """The key that authenticated the request; None where no key was asked for (a public
    route, or ``/metrics`` with ``[metrics] open = true``)."""
    key = request.get(_KEY)
    return key if isinstance(key, ApiKeyConfig) else None


def require_scope(request: web.Request, scope: str) -> None:
    key = calling_key(request)
    if key is not None and not grants(key.scopes, scope):
        log.warning("api_scope_refused", key=key.name, scope=scope, path=request.path)
        raise ApiError(403, "missing_scope",
                       f"API key {key.name!r} lacks scope {str(scope)!r}")


def require_script(request: web.Request, script_id: str) -> None:
    key = calling_key(request)
    if key is not None and not script_allowed(key.scripts, script_id):
        log.warning("api_script_refused", key=key.name, script_id=script_id)
        raise ApiError(403, "script_not_allowed",
                       f"API key {key.name!r} may not trigger script {script_id!r} "
                       f"(its scripts: {', '.join(key.scripts)})")
