"""Serving the console: its static files, read once from the package, and ``index.html`` for
every page path under ``/ui/`` (the pages are drawn by ``app.js`` from the path).

Nothing is fetched from elsewhere and nothing is built: the files under ``static/`` are what
the browser gets. They hold no data; the data comes from the API, signed in.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from aftd.api.errors import ApiError
from aftd.api.state import STATE

__all__ = ["STATIC_TYPES", "add_console", "load_static"]

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every shipped asset by file name: its bytes and content type."""
    out = {}
    for entry in resources.files("aftd.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


def add_console(app: web.Application) -> None:
    """Add the console's routes to the API's app (before it starts)."""
    files = load_static()
    index_body, index_type = files["index.html"]

    def enabled(request: web.Request) -> None:
        if request.app[STATE].sessions is None:
            raise ApiError(404, "console_disabled",
                           "the console is disabled ([console] enabled = false)")

    async def redirect(request: web.Request) -> web.StreamResponse:
        enabled(request)
        raise web.HTTPMovedPermanently("/ui/")

    async def asset(request: web.Request) -> web.StreamResponse:
        enabled(request)
        found = files.get(request.match_info["name"])
        if found is None:
            raise ApiError(404, "not_found", "no such console file")
        body, ctype = found
        return web.Response(body=body, headers={"Content-Type": ctype,
                                                "Cache-Control": "no-cache"})

    async def page(request: web.Request) -> web.StreamResponse:
        enabled(request)
        return web.Response(body=index_body, headers={"Content-Type": index_type,
                                                      "Cache-Control": "no-cache"})

    app.add_routes([web.get("/ui", redirect), web.get("/ui/static/{name}", asset),
                    web.get(r"/ui/{page:.*}", page)])
