"""envoyproxy/ratelimit's YAML read by ``--envoy-config``: nested descriptors, values, unlimited,
shadow_mode, any algorithm; each mistake is refused with its file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from rw_service_helpers import LiveServer

from ratewarden import FakeClock
from ratewarden.errors import ConfigError
from ratewarden.policy.reader import PolicyError
from ratewarden.service import Service
from ratewarden.service.envoy_config import load_envoy_config
from ratewarden.service.proto import rls_pb2, rls_pb2_grpc

Code = rls_pb2.RateLimitResponse.Code
Unit = rls_pb2.RateLimitResponse.RateLimit.Unit


def d(*entries: tuple[str, str]) -> rls_pb2.RateLimitDescriptor:
    return rls_pb2.RateLimitDescriptor(entries=[rls_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries])


def test_the_file_becomes_descriptor_rules(service_policies: Path) -> None:
    policy, routes = load_envoy_config(service_policies / "envoy_edge.yaml")
    got = [(r.entries, r.rule.name if r.rule else None) for r in routes]
    assert got == [
        ((("remote_address", None),), "edge:remote_address"),
        ((("database", "users"),), "edge:database_users"),
        ((("database", None),), "edge:database"),
        ((("to_number", None), ("from_number", None)), "edge:to_number.from_number"),
        ((("path", "/health"),), None),
        ((("plan", "free"),), "free-plan"),
        ((("internal", None),), None),
    ]
    assert all(r.algorithm == "fixed-window" for r in policy.rules)
    shadow = [r.name for r in policy.rules if r.shadow]
    assert shadow == ["free-plan"]
    p2, _ = load_envoy_config(service_policies / "envoy_edge.yaml", algorithm="sliding-log")
    assert {r.algorithm for r in p2.rules} == {"sliding-log"}
    with pytest.raises(ConfigError, match="quota"):
        load_envoy_config(service_policies / "envoy_edge.yaml", algorithm="quota")


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        ("bad_unit.yaml", 5, "'unit' must be one of"),
        ("bad_requests.yaml", 5, "'requests_per_unit' must be an integer"),
        ("zero_requests.yaml", 5, "not supported"),
        ("replaces.yaml", 3, "'replaces' is not supported"),
        ("replaces_in_limit.yaml", 5, "'replaces' is not supported"),
        ("duplicate.yaml", 5, "appears twice"),
        ("no_domain.yaml", 1, "'domain' must be a non-empty string"),
        ("no_key.yaml", 3, "needs a non-empty string 'key'"),
        ("unknown_key.yaml", 3, "unknown descriptor key 'rate_limt'"),
        ("invalid_yaml.yaml", 5, "not valid YAML: while parsing a flow mapping expected"),
        ("shadow_not_bool.yaml", 3, "'shadow_mode' must be true or false"),
    ],
)
def test_each_mistake_names_file_and_line(service_policies: Path, name: str, line: int, reason: str) -> None:
    path = service_policies / "envoy_bad" / name
    with pytest.raises(PolicyError) as err:
        load_envoy_config(path)
    assert err.value.file == str(path)
    assert err.value.line == line, str(err.value)
    assert reason in err.value.reason


def test_a_directory_of_files(tmp_path: Path, service_policies: Path) -> None:
    (tmp_path / "a.yaml").write_text((service_policies / "envoy_edge.yaml").read_text())
    (tmp_path / "b.yml").write_text(
        "domain: other\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 9}\n"
    )
    (tmp_path / "notes.txt").write_text("ignored")
    _policy, routes = load_envoy_config(tmp_path)
    assert {r.domain for r in routes} == {"edge", "other"}
    (tmp_path / "c.yaml").write_text("domain: other\ndescriptors: []\n")
    with pytest.raises(PolicyError, match="also defined"):
        load_envoy_config(tmp_path)


@pytest.fixture
def stub(service_policies: Path) -> Any:
    clock = FakeClock()
    service = Service(envoy_config=service_policies / "envoy_edge.yaml", clock=clock)
    with LiveServer(service) as live, grpc.insecure_channel(live.grpc_target) as ch:
        yield rls_pb2_grpc.RateLimitServiceStub(ch), clock


def ask(stub: Any, *descs: rls_pb2.RateLimitDescriptor) -> Any:
    return stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="edge", descriptors=list(descs)))


def test_served_over_grpc_like_envoy_ratelimit(stub: Any) -> None:
    s, clock = stub
    # fixed window per minute, aligned: 3 then over, reset at the minute
    codes = [ask(s, d(("remote_address", "1.1.1.1"))).overall_code for _ in range(4)]
    assert codes == [Code.OK] * 3 + [Code.OVER_LIMIT]
    clock.advance(60)
    assert ask(s, d(("remote_address", "1.1.1.1"))).overall_code == Code.OK
    # a value beats the wildcard: users has 2/s, any other database 5/s
    assert ask(s, d(("database", "users"))).statuses[0].current_limit.requests_per_unit == 2
    assert ask(s, d(("database", "orders"))).statuses[0].current_limit.requests_per_unit == 5
    # nested: the descriptor is the full path; each pair of values has its own counter
    nested = d(("to_number", "+1"), ("from_number", "+2"))
    assert [ask(s, nested).overall_code for _ in range(3)] == [Code.OK, Code.OK, Code.OVER_LIMIT]
    assert ask(s, d(("to_number", "+1"), ("from_number", "+3"))).overall_code == Code.OK
    assert ask(s, d(("to_number", "+1"))).statuses[0].HasField("current_limit") is False
    st = ask(s, nested).statuses[0]
    assert st.current_limit.unit == Unit.DAY
    # unlimited and shadow_mode: always OK
    assert all(ask(s, d(("path", "/health"))).overall_code == Code.OK for _ in range(5))
    assert all(ask(s, d(("plan", "free"))).overall_code == Code.OK for _ in range(3))
