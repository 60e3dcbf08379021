"""Envoy RLS v3 over a real gRPC channel, with a client generated from the same protos: descriptor
matching, all or nothing, one status per descriptor in order, hits_addend, and the same
decisions as the HTTP API for the same policy and sequence."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from rw_service_helpers import LiveServer

from ratewarden import FakeClock
from ratewarden.service import Service
from ratewarden.service.proto import rls_pb2, rls_pb2_grpc

Code = rls_pb2.RateLimitResponse.Code
Unit = rls_pb2.RateLimitResponse.RateLimit.Unit

POLICY = """
[ratewarden]
storage = "memory://"

[[rule]]
name = "by-ip"
key = "ip"
limits = ["3/minute"]
descriptor = { domain = "edge", entries = ["remote_address"] }

[[rule]]
name = "login"
key = "ip"
limits = ["2/hour"]
descriptor = { domain = "edge", entries = ["remote_address", "path=/login"] }

[[rule]]
name = "any-path"
key = "ip"
limits = ["10/hour"]
descriptor = { domain = "edge", entries = ["remote_address", "path"] }

[[rule]]
name = "watch"
key = "ip"
limits = ["1/hour"]
shadow = true
descriptor = { domain = "edge", entries = ["plan"] }

[[rule]]
name = "odd"
key = "ip"
limits = ["5 per 90 seconds"]
descriptor = { domain = "other", entries = ["user"] }
"""


def d(*entries: tuple[str, str], hits: int | None = None) -> rls_pb2.RateLimitDescriptor:
    desc = rls_pb2.RateLimitDescriptor(entries=[rls_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries])
    if hits is not None:
        desc.hits_addend.value = hits
    return desc


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock: FakeClock) -> Iterator[LiveServer]:
    with LiveServer(Service(POLICY, clock=clock)) as s:
        yield s


@pytest.fixture
def stub(live: LiveServer) -> Iterator[Any]:
    with grpc.insecure_channel(live.grpc_target) as ch:
        yield rls_pb2_grpc.RateLimitServiceStub(ch)


def ask(stub: Any, *descs: rls_pb2.RateLimitDescriptor, domain: str = "edge", hits: int = 0) -> Any:
    return stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain=domain, descriptors=list(descs), hits_addend=hits))


def test_one_descriptor_counts_down_and_denies(stub: Any, clock: FakeClock) -> None:
    codes = []
    for _ in range(4):
        r = ask(stub, d(("remote_address", "10.0.0.1")))
        codes.append(r.overall_code)
        assert len(r.statuses) == 1
    assert codes == [Code.OK] * 3 + [Code.OVER_LIMIT]
    st = r.statuses[0]
    assert st.code == Code.OVER_LIMIT and st.limit_remaining == 0
    assert st.current_limit.requests_per_unit == 3 and st.current_limit.unit == Unit.MINUTE
    assert st.current_limit.name == "by-ip"
    assert st.duration_until_reset.seconds == 20 and st.duration_until_reset.nanos == 0  # gcra: one unit per 20 s
    assert [(h.key, h.value) for h in r.response_headers_to_add] == [("retry-after", "20")]
    clock.advance(20)
    assert ask(stub, d(("remote_address", "10.0.0.1"))).overall_code == Code.OK
    assert ask(stub, d(("remote_address", "10.0.0.2"))).statuses[0].limit_remaining == 2  # another key


def test_pinned_values_and_the_most_specific_rule(stub: Any) -> None:
    login = ask(stub, d(("remote_address", "10.0.0.1"), ("path", "/login")))
    other = ask(stub, d(("remote_address", "10.0.0.1"), ("path", "/home")))
    assert login.statuses[0].current_limit.name == "login"
    assert other.statuses[0].current_limit.name == "any-path"
    # keys in another order, or more keys, match nothing: OK without a limit
    for desc in (
        d(("path", "/login"), ("remote_address", "10.0.0.1")),
        d(("remote_address", "1"), ("a", "b"), ("c", "d")),
    ):
        r = ask(stub, desc)
        assert r.overall_code == Code.OK and not r.statuses[0].HasField("current_limit")
    assert ask(stub, d(("remote_address", "10.0.0.1")), domain="nowhere").statuses[0].code == Code.OK


def test_all_or_nothing_and_statuses_in_request_order(stub: Any) -> None:
    ip = ("remote_address", "10.9.9.9")
    login = d(ip, ("path", "/login"))
    r1 = ask(stub, login, d(ip), d(("unknown", "x")))
    assert [s.code for s in r1.statuses] == [Code.OK, Code.OK, Code.OK]
    assert [s.limit_remaining for s in r1.statuses] == [1, 2, 0]
    ask(stub, login)  # login: 0 left
    r3 = ask(stub, d(ip), login)
    assert r3.overall_code == Code.OVER_LIMIT
    assert [s.code for s in r3.statuses] == [Code.OK, Code.OVER_LIMIT]
    assert r3.statuses[0].limit_remaining == 2  # as it is: the denied request consumed nothing
    # the by-ip window really was not charged by the denied request
    assert ask(stub, d(ip)).statuses[0].limit_remaining == 1
    assert ask(stub, d(ip)).statuses[0].limit_remaining == 0
    assert ask(stub, d(ip)).overall_code == Code.OVER_LIMIT


def test_hits_addend_is_the_cost(stub: Any) -> None:
    r = ask(stub, d(("remote_address", "10.1.1.1")), hits=2)
    assert r.statuses[0].limit_remaining == 1
    r = ask(stub, d(("remote_address", "10.1.1.2"), hits=3), d(("remote_address", "10.1.1.3")), hits=2)
    assert [s.limit_remaining for s in r.statuses] == [0, 1]
    r = ask(stub, d(("remote_address", "10.1.1.4"), hits=0))  # 0 means 1
    assert r.statuses[0].limit_remaining == 2
    r = ask(stub, d(("remote_address", "10.1.1.5")), hits=4)  # above the limit: never
    assert r.overall_code == Code.OVER_LIMIT and r.statuses[0].duration_until_reset.seconds > 10**8


def test_shadow_rules_never_deny(stub: Any) -> None:
    codes = [ask(stub, d(("plan", "free"))).statuses[0].code for _ in range(3)]
    assert codes == [Code.OK] * 3


def test_a_window_that_is_no_unit(stub: Any) -> None:
    st = ask(stub, d(("user", "u")), domain="other").statuses[0]
    assert st.current_limit.unit == Unit.UNKNOWN and st.current_limit.name == "odd"


def test_empty_domain_or_descriptors_are_invalid(stub: Any) -> None:
    for req in (
        rls_pb2.RateLimitRequest(domain="", descriptors=[d(("a", "b"))]),
        rls_pb2.RateLimitRequest(domain="edge"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.ShouldRateLimit(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_and_http_give_the_same_decisions(clock: FakeClock) -> None:
    """Two services on the same policy and clock start; one asked over gRPC, one over HTTP."""
    c1, c2 = FakeClock(clock()), FakeClock(clock())
    with (
        LiveServer(Service(POLICY, clock=c1)) as a,
        LiveServer(Service(POLICY, clock=c2), grpc=False) as b,
        grpc.insecure_channel(a.grpc_target) as ch,
        httpx.Client(base_url=b.url) as http,
    ):
        stub = rls_pb2_grpc.RateLimitServiceStub(ch)
        seq = [("10.0.0.1", 1), ("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.1", 1), ("10.0.0.1", 1)]
        seq += [("10.0.0.2", 1), ("10.0.0.2", 1), ("10.0.0.1", 1)]
        for ip, cost in seq:
            g = ask(stub, d(("remote_address", ip)), hits=cost).statuses[0]
            h = http.post("/v1/check", json={"rule": "by-ip", "key": ip, "cost": cost}).json()
            assert (g.code == Code.OK) == h["allowed"]
            assert g.limit_remaining == h["remaining"]
            wait = h["reset_after"] if h["allowed"] else h["retry_after"]
            assert g.duration_until_reset.seconds + g.duration_until_reset.nanos / 1e9 == pytest.approx(wait)
            c1.advance(7)
            c2.advance(7)
