"""Files served to browsers, shipped in the package: the browser helper ``ratewarden.js`` and the
dashboard's page, script and style. No build step; nothing is loaded from another site."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["read_static", "script_route"]

_NAMES = frozenset({"ratewarden.js", "dashboard.html", "dashboard.js", "dashboard.css"})


@cache
def read_static(name: str) -> str:
    """The text of one shipped file (``ratewarden.js``, ``dashboard.html``, ...)."""
    if name not in _NAMES:
        raise KeyError(f"no static file named {name!r}")
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def script_route(path: str = "/ratewarden.js") -> Any:
    """A Starlette route serving the browser helper (``Route(path, ...)``, JavaScript, cacheable)."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def serve(request: Request) -> Response:
        return Response(
            read_static("ratewarden.js"),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=300"},
        )

    return Route(path, serve, methods=["GET"])
