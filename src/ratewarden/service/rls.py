"""Envoy's rate limit service (RLS v3) over grpcio: ``envoy.service.ratelimit.v3.RateLimitService``.

``ShouldRateLimit`` matches each request descriptor to a rule (see
:mod:`ratewarden.service.descriptors`), then decides every matched rule together, all or
nothing, in one store call: one denied descriptor means nothing is consumed in any. The answer
has one status per descriptor, in request order: ``OK`` or ``OVER_LIMIT``, the deciding
window's ``current_limit`` (requests per unit, when the window is a whole second, minute, hour,
day, week, month of 30 days or year of 365 days; else ``UNKNOWN`` and the rule's name says it),
``limit_remaining``, and ``duration_until_reset`` (on a denial: the exact wait until the same
request passes; else the time until the window is full again). A descriptor that matches no
rule, or an ``unlimited`` one, is ``OK`` with no limit. The cost is the descriptor's
``hits_addend`` when set, else the request's; 0 means 1. A shadow rule is decided, counted and
always ``OK``. An empty domain or descriptor list is ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from ratewarden.core.decision import retry_after_seconds
from ratewarden.policy.model import Rule
from ratewarden.service.decide import decide_many
from ratewarden.service.descriptors import descriptor_key
from ratewarden.service.inputs import MAX_COST, MAX_KEY
from ratewarden.service.proto import rls_pb2, rls_pb2_grpc
from ratewarden.service.state import Service

__all__ = ["GrpcServer", "RateLimitServicer", "start_grpc"]

log = logging.getLogger("ratewarden.service")

Code = rls_pb2.RateLimitResponse.Code
Unit = rls_pb2.RateLimitResponse.RateLimit.Unit
_UNITS = {1: Unit.SECOND, 60: Unit.MINUTE, 3600: Unit.HOUR, 86400: Unit.DAY, 604800: Unit.WEEK}
_UNITS |= {2592000: Unit.MONTH, 31536000: Unit.YEAR}
_MAX_U32 = 2**32 - 1


def _duration(seconds: float) -> Duration:
    d = Duration()
    if math.isinf(seconds) or seconds < 0:
        seconds = 0.0 if seconds < 0 else 10 * 365 * 86400.0  # a wait that never ends: ten years
    whole = int(seconds)
    d.seconds = whole
    d.nanos = round((seconds - whole) * 1e9)
    if d.nanos >= 1_000_000_000:
        d.seconds, d.nanos = whole + 1, 0
    return d


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, service: Service) -> None:
        self.service = service

    async def ShouldRateLimit(  # noqa: N802 - the RPC's name
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rls_pb2.RateLimitResponse:
        if not request.domain:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the rate limit domain must not be empty")
        if not request.descriptors:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the descriptor list must not be empty")
        snap = self.service.snapshot
        metrics = self.service.metrics
        t0 = time.perf_counter()
        asks: list[tuple[Rule, str, int]] = []
        slots: list[int | None] = []  # per descriptor: its index in asks, or None (not limited)
        for d in request.descriptors:
            entries = [(e.key, e.value) for e in d.entries]
            route = snap.index.match(request.domain, entries) if entries else None
            if route is None or route.rule is None:
                slots.append(None)
                continue
            cost = d.hits_addend.value if d.HasField("hits_addend") else request.hits_addend
            cost = cost or 1
            if cost > MAX_COST:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"hits_addend is larger than {MAX_COST}")
            key = descriptor_key(route, [v for _, v in entries])
            if len(key) > MAX_KEY:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"a descriptor's values exceed {MAX_KEY} characters"
                )
            slots.append(len(asks))
            asks.append((route.rule, key, cost))
        granted, error = await decide_many(snap.engine, asks) if asks else ([], None)
        if error is not None:
            metrics.store_errors.inc()
        response = rls_pb2.RateLimitResponse(overall_code=Code.OK)
        longest = 0.0
        for slot in slots:
            st = response.statuses.add()
            if slot is None:
                st.code = Code.OK
                continue
            rule = asks[slot][0]
            g = granted[slot]
            over = not g.allowed and not rule.shadow
            st.code = Code.OVER_LIMIT if over else Code.OK
            st.current_limit.name = rule.name
            st.current_limit.requests_per_unit = min(g.limit, _MAX_U32)
            st.current_limit.unit = _UNITS.get(int(g.period) if g.period == int(g.period) else -1, Unit.UNKNOWN)
            st.limit_remaining = min(g.remaining, _MAX_U32)
            st.duration_until_reset.CopyFrom(_duration(g.retry_after if not g.allowed else g.reset_after))
            if over:
                response.overall_code = Code.OVER_LIMIT
                longest = max(longest, g.retry_after)
                self.service.record(rule.name, "unavailable" if g.store_error else "denied", asks[slot][1])
            else:
                self.service.record(rule.name, "shadow" if not g.allowed else "allowed")
        if response.overall_code == Code.OVER_LIMIT:
            h = response.response_headers_to_add.add()
            whole = retry_after_seconds(longest)
            h.key, h.value = "retry-after", str(315360000 if whole is None else whole)
        metrics.observe("grpc", time.perf_counter() - t0)
        return response


class GrpcServer:
    """A started ``grpc.aio`` server and the port it listens on."""

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self.server = server
        self.port = port

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls; let those in flight finish for up to ``grace`` seconds."""
        await self.server.stop(grace)


async def start_grpc(service: Service, host: str, port: int) -> GrpcServer:
    """Serve RLS on ``host:port`` (0: any free port) in the running event loop. Several worker
    processes may bind the same port (SO_REUSEPORT, grpc's default on Linux)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(service), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    log.info("ratewarden: Envoy RLS on %s:%d", host, bound, extra={"rw_event": "grpc_start", "port": bound})
    return GrpcServer(server, bound)
