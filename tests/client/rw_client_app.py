"""The app the client tests run under uvicorn: every route answers, the middleware limits."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from ratewarden.asgi import RateLimitMiddleware

POLICY = Path(__file__).with_name("client_policy.toml")


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"method": request.method, "path": request.url.path, "body": body.decode()})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/{rest:path}", echo, methods=["GET", "POST", "PUT", "DELETE"]),
    ],
    middleware=[Middleware(RateLimitMiddleware, policy=str(POLICY))],
)
