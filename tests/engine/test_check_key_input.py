"""``Engine.check_key`` (the decision service's entry): bad input is an error to the caller,
with the field at fault, and never an admission; nothing is counted for it."""

from __future__ import annotations

import math
from typing import Any

import pytest
from rw_engine_helpers import MakeEngine

from ratewarden.errors import RequestError, UnknownRuleError

POLICY = '[[rule]]\nname = "login"\nlimits = ["3/hour"]\nalgorithm = "fixed-window"\n'
BAD_COSTS: list[Any] = [-5, -1, None, "abc", "1", 1.0, math.nan, math.inf, -math.inf, True, False, [1], {"n": 1}]
BAD_KEYS: list[Any] = [None, 5, b"alice", "", "   ", ["alice"], "x" * 257, "\ud800alice"]


@pytest.mark.parametrize("cost", BAD_COSTS, ids=repr)
@pytest.mark.parametrize("mode", ["allow", "deny", "local"])
async def test_a_bad_cost_is_the_callers_error(make: MakeEngine, cost: Any, mode: str) -> None:
    e = make(f'[ratewarden]\non_store_error = "{mode}"\n' + POLICY)
    for _ in range(3):
        assert e.check_key("login", "alice").allowed
    with pytest.raises(RequestError) as info:
        e.check_key("login", "alice", cost=cost)
    assert info.value.field == "cost"
    assert repr(cost) in str(info.value)
    with pytest.raises(RequestError):
        await e.acheck_key("login", "alice", cost=cost)
    assert not e.check_key("login", "alice").allowed


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: repr(k)[:20])
async def test_a_bad_key_is_the_callers_error(make: MakeEngine, key: Any) -> None:
    e = make(POLICY)
    with pytest.raises(RequestError) as info:
        e.check_key("login", key)
    assert info.value.field == "key"
    with pytest.raises(RequestError):
        await e.acheck_key("login", key)


@pytest.mark.parametrize("rule", ["nope", "", None, 5, ["login"]], ids=repr)
async def test_an_unknown_rule_is_the_callers_error(make: MakeEngine, rule: Any) -> None:
    e = make(POLICY)
    with pytest.raises(RequestError) as info:
        e.check_key(rule, "alice")
    assert info.value.field == "rule"
    with pytest.raises(RequestError):
        await e.acheck_key(rule, "alice")
    if isinstance(rule, str):
        assert isinstance(info.value, UnknownRuleError) and isinstance(info.value, KeyError)
        assert str(info.value) == f"no rule named {rule!r}"


def test_bad_attrs_and_good_edge_values(make: MakeEngine) -> None:
    e = make(POLICY)
    with pytest.raises(RequestError) as info:
        e.check_key("login", "alice", attrs=["plan", "pro"])  # type: ignore[arg-type]
    assert info.value.field == "attrs"
    assert e.check_key("login", "x" * 256).allowed  # max_key_length characters: fine
    assert e.check_key("login", "bob", cost=0).allowed  # a check that consumes nothing
    assert e.check_key("login", "bob", cost=3).allowed
    v = e.check_key("login", "carol", cost=10**400)  # more than any limit: denied, never queued
    assert not v.allowed and v.retry_after == math.inf
