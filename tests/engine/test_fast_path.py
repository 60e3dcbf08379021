"""The straight-call path of common requests (no bans, no shadow or after-response rules on the
route) decides exactly as the general generator path; the route cache is bounded; header names."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rw_engine_helpers import MakeEngine, header, req

from ratewarden import FakeClock
from ratewarden.engine import ROUTE_CACHE_SIZE, Engine, Verdict
from ratewarden.events import Event
from ratewarden.http import rate_limit_headers

RULES = """
[[rule]]
name = "all"
limits = ["3/minute"]
algorithm = "fixed-window"

[[rule]]
name = "x"
match = { path = "/x*", methods = ["GET"] }
limits = ["2/10 seconds", "5/minute"]

[[rule]]
name = "client"
key = "header:X-Client-Id"
fallback = "ip"
limits = ["4/minute"]
algorithm = "sliding-window"
"""
#: a shadow rule on every route makes every request take the general path (and never denies)
GENERAL = RULES + '\n[[rule]]\nname = "watch"\nlimits = ["1000000/second"]\nshadow = true\n'

REQUESTS = st.tuples(
    st.sampled_from(["198.51.100.1", "198.51.100.2", "2001:db8::1"]),
    st.sampled_from(["/", "/x", "/x/y", "//x/../x"]),
    st.sampled_from(["GET", "POST"]),
    st.sampled_from([None, "c1", "c2"]),
    st.sampled_from([0.0, 0.0, 0.5, 3.0, 11.0]),
)


def shown(v: Verdict) -> tuple[object, ...]:
    return (v.allowed, v.status, v.headers, v.body, v.retry_after, v.rule, [tuple(d) for d in v.decisions])


@settings(max_examples=60, deadline=None)
@given(st.lists(REQUESTS, max_size=25), st.sampled_from(["draft", "legacy", "both"]))
def test_fast_path_decides_as_the_general_path(steps: list[tuple[str, str, str, str | None, float]], mode: str) -> None:
    head = f'[ratewarden]\nheaders = "{mode}"\nlegacy_reset = "epoch"\n'
    clock = FakeClock(1_800_000_000.25)
    fast = Engine(head + RULES, clock=clock, env={})
    general = Engine(head + GENERAL, clock=clock, env={})
    try:
        for ip, path, method, client, wait in steps:
            clock.advance(wait)
            f = req(path, ip=ip, method=method, headers={"x-client-id": client} if client else {})
            a, b = fast.check(f), general.check(f)
            assert shown(a) == shown(b)
            assert a.pending is None, "nothing to do after the response on a fast route"
            if a.decisions and mode == "draft":  # the integer formatting equals the general formatter
                assert a.headers[:2] == rate_limit_headers("draft", a.decisions)
            assert shown(fast.peek(f)) == shown(general.peek(f))
    finally:
        fast.close()
        general.close()


async def test_async_fast_path_decides_as_the_sync_one(clock: FakeClock) -> None:
    sync, asyn = Engine(RULES, clock=clock, env={}), Engine(RULES, clock=clock, env={})
    try:
        for i in range(8):
            f = req("/x", headers={"x-client-id": f"c{i % 2}"})
            assert shown(sync.check(f)) == shown(await asyn.acheck(f))
            assert shown(sync.peek(f)) == shown(await asyn.apeek(f))
    finally:
        sync.close()
        await asyn.aclose()


def test_a_flood_of_distinct_paths_keeps_the_route_cache_bounded(make: MakeEngine) -> None:
    e = make('[[rule]]\nname = "p"\nmatch = { path = "/p/{id}" }\nlimits = ["2/minute"]\nalgorithm = "fixed-window"\n')
    for i in range(ROUTE_CACHE_SIZE + 50):
        assert e.check(req(f"/p/{i}", ip="192.0.2.1")).allowed == (i < 2)
        assert len(e._routes) <= ROUTE_CACHE_SIZE
    assert not e.check(req("/p/0", ip="192.0.2.1")).allowed, "the rule still counts after the cache started over"
    assert e.check(req("/other", ip="192.0.2.1")).allowed, "an unmatched path is still unmatched"


def test_policy_names_get_a_suffix_only_for_several_windows(make: MakeEngine) -> None:
    e = make(
        '[[rule]]\nname = "plan"\nkey = "user"\nlimits = ["10/minute"]\n'
        'tiers = { attr = "plan", mode = "replace", pro = ["100/minute", "1000/hour"], lite = "20/minute" }\n'
    )
    pro = e.check(req(user="u1", user_attrs={"plan": "pro"}))
    assert header(pro, "RateLimit-Policy") == '"plan-60s";q=100;w=60, "plan-3600s";q=1000;w=3600'
    lite = e.check(req(user="u2", user_attrs={"plan": "lite"}))
    assert header(lite, "RateLimit-Policy") == '"plan";q=20;w=60'
    base = e.check(req(user="u3"))
    assert header(base, "RateLimit-Policy") == '"plan";q=10;w=60'
    denied = json.loads(e.check_key("plan", "u4", cost=50, attrs={"plan": "lite"}).body or b"")
    assert denied["rule"] == "plan"


def test_huge_paths_are_matched_but_never_cached(make: MakeEngine) -> None:
    e = make('[[rule]]\nname = "g"\nmatch = { path = "/g*" }\nlimits = ["2/minute"]\nalgorithm = "fixed-window"\n')
    huge = "/g" + "x" * 100_000
    assert [e.check(req(huge)).allowed for _ in range(3)] == [True, True, False]
    assert all(len(k[1]) < 1000 for k in e._routes)


@pytest.mark.redis
@pytest.mark.parametrize("shadow", [False, True])
async def test_store_down_with_a_ban_is_one_store_error_event_then_503(
    make: MakeEngine, events: list[Event], shadow: bool
) -> None:
    policy = (
        '[ratewarden]\non_store_error = "deny"\n'
        '[[rule]]\nname = "a"\nlimits = ["5/minute"]\n'
        '[[ban]]\nname = "abuse"\nmatch = { status = [401] }\nmax = 3\nwithin = "1 minute"\nban_for = "1 hour"\n'
    )
    if shadow:
        policy += '[[rule]]\nname = "watch"\nlimits = ["1/minute"]\nshadow = true\n'
    e = make(policy, storage="redis://127.0.0.1:1/11")  # nothing listens on port 1
    for v in (e.check(req()), await e.acheck(req())):
        assert (v.allowed, v.status) == (False, 503)
    assert [ev.kind for ev in events] == ["store_error", "store_error"]


@settings(max_examples=40, deadline=None)
@given(st.lists(REQUESTS, min_size=1, max_size=30))
def test_fast_path_denials_name_the_same_rule_and_key_as_the_general_path(
    steps: list[tuple[str, str, str, str | None, float]],
) -> None:
    """The fast path makes each item's owner (rule, key) only for a denial: the throttle events
    (rule and stored key), and the memory store's verdict on an async engine, are the general path's."""
    clock = FakeClock(1_800_000_000.25)
    seen: dict[str, list[Event]] = {"fast": [], "general": []}
    fast = Engine(RULES, clock=clock, env={}, on_event=seen["fast"].append)
    general = Engine(GENERAL, clock=clock, env={}, on_event=seen["general"].append)
    try:
        for ip, path, method, client, wait in steps:
            clock.advance(wait)
            f = req(path, ip=ip, method=method, headers={"x-client-id": client} if client else {})
            assert shown(fast.check(f)) == shown(general.check(f))
        assert [(e.kind, e.rule, e.key, e.retry_after) for e in seen["fast"]] == [
            (e.kind, e.rule, e.key, e.retry_after) for e in seen["general"]
        ]
    finally:
        fast.close()
        general.close()


async def test_acheck_on_a_memory_store_decides_as_check(clock: FakeClock) -> None:
    """``acheck`` on a memory store runs the sync path (no coroutine of its own): same verdicts,
    denials included, as ``check`` on a twin engine, through the general path (a shadow rule) too."""
    for policy in (RULES, GENERAL):
        sync, asyn = Engine(policy, clock=clock, env={}), Engine(policy, clock=clock, env={})
        try:
            assert asyn._inline
            for i in range(12):
                f = req("/x" if i % 3 else "/", headers={"x-client-id": f"c{i % 2}"})
                assert shown(sync.check(f)) == shown(await asyn.acheck(f))
        finally:
            sync.close()
            await asyn.aclose()
