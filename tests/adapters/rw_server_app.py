"""The app the real-server test runs under uvicorn (policy path from RW_TEST_POLICY)."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from ratewarden.asgi import RateLimitMiddleware


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def login(request: Request) -> JSONResponse:
    try:
        data = await request.json()
    except ValueError:
        return JSONResponse({"error": "bad json"}, status_code=400)
    return JSONResponse({"email": data.get("email")})


async def whoami(request: Request) -> JSONResponse:
    """What a Starlette handler acts on: ``request.headers[...]`` (the first of repeated lines),
    ``request.cookies``, ``request.query_params``, ``request.json()``."""
    data = None
    if request.method == "POST":
        try:
            data = await request.json()
        except ValueError:
            data = None
    return JSONResponse(
        {
            "api_key": request.headers.get("x-api-key"),
            "authorization": request.headers.get("authorization"),
            "sid": request.cookies.get("sid"),
            "email": request.query_params.get("email"),
            "json": data,
        }
    )


app = Starlette(
    routes=[
        Route("/api/{rest:path}", hello),
        Route("/login", login, methods=["POST"]),
        Route("/healthz", hello),
        Route("/keyed/{what}", whoami, methods=["GET", "POST"]),
    ],
    middleware=[Middleware(RateLimitMiddleware, policy=os.environ["RW_TEST_POLICY"])],
)
