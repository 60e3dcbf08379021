"""Prometheus metrics: the service's /metrics (decisions by rule and outcome, store errors, the
latency histogram, memory keys, reloads), and the opt-in for an app that embeds the middleware."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import httpx
from prometheus_client import CollectorRegistry, generate_latest
from rw_service_helpers import LiveServer, free_port
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ratewarden import FakeClock
from ratewarden.asgi import RateLimitMiddleware
from ratewarden.metrics import Metrics
from ratewarden.service import Service
from ratewarden.service.proto import rls_pb2, rls_pb2_grpc

POLICY = """
[ratewarden]
storage = "memory://"

[[rule]]
name = "login"
match = { path = "/login" }
key = "ip"
limits = ["2/minute"]
descriptor = { domain = "edge", entries = ["remote_address"] }

[[rule]]
name = "watch"
match = { path = "/login" }
key = "ip"
limits = ["1/minute"]
shadow = true
"""


def value(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
    return 0.0


def test_service_metrics(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(POLICY)
    with LiveServer(Service(str(f), clock=FakeClock())) as live, httpx.Client(base_url=live.url) as c:
        for _ in range(3):
            c.post("/v1/check", json={"rule": "login", "key": "a"})
        for _ in range(2):
            c.post("/v1/check", json={"request": {"path": "/login", "ip": "198.51.100.1"}})
        with grpc.insecure_channel(live.grpc_target) as ch:
            stub = rls_pb2_grpc.RateLimitServiceStub(ch)
            d = rls_pb2.RateLimitDescriptor(
                entries=[rls_pb2.RateLimitDescriptor.Entry(key="remote_address", value="b")]
            )
            for _ in range(3):
                stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="edge", descriptors=[d]))
        f.write_text(POLICY + "\n[[rule]]\nbroken")
        live.service.reload()
        f.write_text(POLICY)
        live.service.reload()
        text = c.get("/metrics").text
    assert value(text, "ratewarden_decisions_total", rule="login", outcome="allowed") == 2 + 2 + 2
    assert value(text, "ratewarden_decisions_total", rule="login", outcome="denied") == 1 + 1
    assert value(text, "ratewarden_decision_seconds_count", api="http_key") == 3
    assert value(text, "ratewarden_decision_seconds_count", api="http_request") == 2
    assert value(text, "ratewarden_decision_seconds_count", api="grpc") == 3
    assert value(text, "ratewarden_memory_keys") >= 3  # keys a, b, ip=198.51.100.1 (+ the shadow rule's)
    assert value(text, "ratewarden_reloads_total", result="ok") == 1
    assert value(text, "ratewarden_reloads_total", result="error") == 1
    assert value(text, "ratewarden_events_total", kind="shadow") == 1  # the shadow rule's would-be denial


def test_store_errors_are_counted() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with LiveServer(Service(POLICY, storage=dead), grpc=False) as live, httpx.Client(base_url=live.url) as c:
        for _ in range(3):
            assert c.post("/v1/check", json={"rule": "login", "key": "a"}).json()["allowed"] is True
        text = c.get("/metrics").text
    assert value(text, "ratewarden_store_errors_total") == 3


async def test_the_middleware_opt_in() -> None:
    """An app with its own /metrics attaches ratewarden's metrics to the middleware's engine."""
    registry = CollectorRegistry()  # an app would use prometheus_client's default REGISTRY
    metrics = Metrics(registry)

    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def expose(request: object) -> Response:
        return Response(generate_latest(registry), media_type="text/plain")

    inner = Starlette(routes=[Route("/login", ok), Route("/metrics", expose)])
    app = RateLimitMiddleware(inner, policy=POLICY, clock=FakeClock())
    metrics.attach(app.engine)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
        codes = [(await c.get("/login")).status_code for _ in range(3)]
        text = (await c.get("/metrics")).text
    assert codes == [200, 200, 429]
    assert value(text, "ratewarden_decisions_total", rule="login", outcome="denied") == 1
    assert value(text, "ratewarden_decisions_total", rule="watch", outcome="shadow") >= 1
    assert value(text, "ratewarden_memory_keys") >= 1
