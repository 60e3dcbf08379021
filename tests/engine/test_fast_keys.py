"""The fast route's key shortcuts (the ``ip`` key worked out once per request and remembered per
socket peer, a ``header:NAME`` key skipped when its header is absent) give exactly the keys of
the general path, whatever the key shape, fallback, header value and trusted proxies."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rw_engine_helpers import MakeEngine, req

from ratewarden import FakeClock
from ratewarden.engine import ROUTE_CACHE_SIZE, Engine, Verdict

RULES = """
[[rule]]
name = "plain"
key = "header:X-A"
limits = ["3/minute"]

[[rule]]
name = "to-header"
key = "header:X-A|lower"
fallback = "header:X-B"
limits = ["4/minute"]

[[rule]]
name = "to-ip"
key = "header:X-B"
fallback = "ip"
limits = ["2/10 seconds", "5/minute"]

[[rule]]
name = "ip"
key = "ip"
limits = ["6/minute"]

[[rule]]
name = "two"
key = "ip+header:X-A"
limits = ["3/minute"]
"""
#: a shadow rule on every route sends every request down the general path (it never denies)
GENERAL = RULES + '\n[[rule]]\nname = "watch"\nlimits = ["1000000/second"]\nshadow = true\n'

VALUES = st.sampled_from([None, "", "v", "V", " w "])
REQUESTS = st.tuples(
    st.sampled_from(["198.51.100.1", "198.51.100.2", "10.0.0.9", "2001:db8::1", None]),
    VALUES,
    VALUES,
    st.sampled_from([None, "203.0.113.5", "203.0.113.5, 10.0.0.8"]),
    st.sampled_from([0.0, 0.0, 0.5, 11.0]),
)


def shown(v: Verdict) -> tuple[object, ...]:
    return (v.allowed, v.status, v.headers, v.body, v.retry_after, v.rule, [tuple(d) for d in v.decisions])


@settings(max_examples=60, deadline=None)
@given(st.lists(REQUESTS, max_size=25), st.sampled_from(["", 'trusted_proxies = ["10.0.0.0/8"]\n']))
def test_fast_keys_are_the_general_keys(steps: list[tuple[object, ...]], proxies: str) -> None:
    head = f"[ratewarden]\n{proxies}"
    clock = FakeClock(1_800_000_000.25)
    events_fast: list[tuple[object, ...]] = []
    events_general: list[tuple[object, ...]] = []
    fast = Engine(head + RULES, clock=clock, env={}, on_event=lambda e: events_fast.append((e.kind, e.rule, e.key)))
    general = Engine(
        head + GENERAL, clock=clock, env={}, on_event=lambda e: events_general.append((e.kind, e.rule, e.key))
    )
    try:
        for ip, a, b, xff, wait in steps:
            clock.advance(float(wait))  # type: ignore[arg-type]
            headers = {k: v for k, v in (("x-a", a), ("x-b", b), ("x-forwarded-for", xff)) if v is not None}
            f = req("/", ip=ip, headers=headers)  # type: ignore[arg-type]
            assert shown(fast.check(f)) == shown(general.check(f))
        assert events_fast == [e for e in events_general if e[1] != "watch"]
    finally:
        fast.close()
        general.close()


def test_the_peer_key_cache_is_per_engine_and_bounded(make: MakeEngine) -> None:
    e = make('[[rule]]\nname = "ip"\nlimits = ["1000/minute"]\n')
    other = make('[ratewarden]\nreadable_keys = ["ip"]\n[[rule]]\nname = "ip"\nlimits = ["1000/minute"]\n')
    for i in range(ROUTE_CACHE_SIZE + 10):
        assert e.check(req(ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")).allowed
    assert 0 < len(e._peer_keys) <= ROUTE_CACHE_SIZE
    assert other.check(req(ip="10.0.0.1")).allowed
    assert other._peer_keys == {"10.0.0.1": "ip=10.0.0.1"}  # its own settings: readable, not hashed


def test_behind_a_trusted_proxy_the_peer_alone_is_never_the_key(make: MakeEngine) -> None:
    e = make('[ratewarden]\ntrusted_proxies = ["10.0.0.0/8"]\n[[rule]]\nname = "ip"\nlimits = ["2/minute"]\n')
    for client in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):  # one proxy, three clients
        f = req(ip="10.0.0.8", headers={"x-forwarded-for": client})
        assert e.check(f).allowed and e.check(f).allowed and not e.check(f).allowed
    assert not e._peer_keys
