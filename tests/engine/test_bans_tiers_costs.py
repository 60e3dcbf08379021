"""Fail2Ban/Allow2Ban, tiers by role or plan, costs (constant, request header, after the response),
daily quotas, and store failures (a real unreachable Redis)."""

from __future__ import annotations

import json

import pytest
from rw_engine_helpers import MakeEngine, header, req

import rw_redis
from ratewarden import FakeClock
from ratewarden.events import Event

FAIL2BAN = """
[[ban]]
name = "login-abuse"
match = { path = "/api/v1/auth/login", status = [401, 403] }
key = "ip"
max = 10
within = "1 minute"
ban_for = "1 hour"
"""

LOGIN = "/api/v1/auth/login"


def _fail(e: object, clock: FakeClock, n: int, ip: str = "198.51.100.7", status: int = 401, step: float = 5) -> None:
    for _ in range(n):
        f = req(LOGIN, method="POST", ip=ip)
        v = e.check(f)  # type: ignore[attr-defined]
        assert v.allowed
        e.after(f, v, status, {})  # type: ignore[attr-defined]
        clock.advance(step)


def test_ten_failed_logins_in_a_minute_ban_the_ip_for_an_hour(
    make: MakeEngine, clock: FakeClock, events: list[Event]
) -> None:
    e = make(FAIL2BAN)
    _fail(e, clock, 10, step=5)  # 10 failures within 50 s; the clock is now at t=50
    v = e.check(req(LOGIN, method="POST"))
    assert (v.allowed, v.status) == (False, 403)
    # banned at t=45 (the 10th failure) for 3600 s; now t=50
    assert header(v, "Retry-After") == "3595"
    body = json.loads(v.body or b"")
    assert body["error"] == "banned" and body["retry_after"] == 3595 and body["rule"] == "login-abuse"
    assert [ev.kind for ev in events] == ["ban", "banned"]
    assert events[0].retry_after == 3600 and events[0].client_ip == "198.51.100.7"
    # the ban covers every path the ban matches, and other IPs are not affected
    assert e.check(req(LOGIN, method="POST", ip="198.51.100.8")).allowed
    clock.advance(3594)
    assert e.check(req(LOGIN, method="POST")).status == 403
    clock.advance(1)
    v = e.check(req(LOGIN, method="POST"))
    assert v.allowed, "the ban lifts on time"
    e.after(req(LOGIN, method="POST"), v, 401, {})
    assert e.check(req(LOGIN, method="POST")).allowed, "the counter started again from zero"


def test_failures_spread_over_more_than_a_minute_do_not_ban(make: MakeEngine, clock: FakeClock) -> None:
    e = make(FAIL2BAN)
    _fail(e, clock, 20, step=6.7)  # 10 failures span 60.3 s: never 10 within a minute
    assert e.check(req(LOGIN, method="POST")).allowed


def test_successes_and_other_paths_are_not_counted(make: MakeEngine, clock: FakeClock) -> None:
    e = make(FAIL2BAN)
    _fail(e, clock, 9, step=1)
    _fail(e, clock, 30, status=200, step=0)
    for _ in range(5):
        f = req("/other", method="POST")
        e.after(f, e.check(f), 401, {})
    assert e.check(req(LOGIN, method="POST")).allowed
    _fail(e, clock, 1, step=0)
    assert e.check(req(LOGIN, method="POST")).status == 403


def test_allow2ban_counts_every_request(make: MakeEngine, clock: FakeClock) -> None:
    e = make('[[ban]]\nname = "scraper"\nmatch = { path = "/search" }\nmax = 3\nwithin = "10 seconds"\nban_for = 60\n')
    for _ in range(3):
        f = req("/search")
        v = e.check(f)
        assert v.allowed
        e.after(f, v, 200, {})
    v = e.check(req("/search"))
    assert (v.status, header(v, "Retry-After")) == (403, "60")
    e.after(req("/search"), v, v.status, {})  # a banned request does not extend the ban
    clock.advance(60)
    assert e.check(req("/search")).allowed


def test_shadow_ban_reports_but_never_bans(make: MakeEngine, clock: FakeClock, events: list[Event]) -> None:
    e = make(FAIL2BAN.replace('ban_for = "1 hour"', 'ban_for = "1 hour"\nshadow = true'))
    _fail(e, clock, 25, step=1)
    assert e.check(req(LOGIN, method="POST")).allowed
    assert [ev.kind for ev in events] == ["shadow", "shadow"] and events[0].detail == "ban"


TIERS = """
[[rule]]
name = "generate"
match = { path = "/generate*" }
key = "user"
limits = ["10/minute"]
algorithm = "fixed-window"
tiers = { claim = "role", OWNER = 3, MAINTAINER = 2, WRITER = 1.5, READER = 1, BANNED = 0 }
"""


@pytest.mark.parametrize(("role", "admitted"), [("OWNER", 30), ("MAINTAINER", 20), ("WRITER", 15), ("READER", 10)])
def test_tiers_multiply_by_role_from_user_attrs(make: MakeEngine, role: str, admitted: int) -> None:
    e = make(TIERS)
    f = req("/generate/text", user="u1", user_attrs={"role": role})
    got = [e.check(f).allowed for _ in range(admitted + 3)]
    assert got == [True] * admitted + [False] * 3
    v = e.check(f)
    assert header(v, "RateLimit-Policy") == f'"generate";q={admitted};w=60'


def test_unknown_role_gets_the_base_limit_and_zero_gets_nothing(make: MakeEngine) -> None:
    e = make(TIERS)
    f = req("/generate", user="u2", user_attrs={"role": "ALIEN"})
    assert sum(e.check(f).allowed for _ in range(15)) == 10
    v = e.check(req("/generate", user="u3", user_attrs={"role": "BANNED"}))
    assert (v.allowed, v.status, header(v, "Retry-After")) == (False, 429, None)
    assert json.loads(v.body or b"")["retry_after"] is None


def test_tiers_replace_by_plan(make: MakeEngine) -> None:
    e = make(
        '[[rule]]\nname = "api"\nkey = "user"\nlimits = ["2/minute"]\nalgorithm = "fixed-window"\n'
        'tiers = { attr = "plan", mode = "replace", free = "3/minute", pro = ["5/minute", "100/hour"] }\n'
    )
    assert sum(e.check(req(user="a", user_attrs={"plan": "free"})).allowed for _ in range(9)) == 3
    assert sum(e.check(req(user="b", user_attrs={"plan": "pro"})).allowed for _ in range(9)) == 5
    assert sum(e.check(req(user="c")).allowed for _ in range(9)) == 2


def test_constant_and_header_costs(make: MakeEngine) -> None:
    e = make(
        '[[rule]]\nname = "c"\nlimits = ["10/minute"]\nalgorithm = "fixed-window"\ncost = 4\n'
        '[[rule]]\nname = "h"\nmatch = { path = "/h" }\nkey = "user"\nlimits = ["10/minute"]\n'
        'algorithm = "fixed-window"\ncost = "header:X-Cost"\n'
    )
    assert [e.check(req("/c")).allowed for _ in range(3)] == [True, True, False]
    f = req("/h", ip="198.51.100.50", user="x", headers={"x-cost": "7"})
    assert e.check(f).allowed
    assert not e.check(f).allowed, "7 + 7 > 10"
    for bad in ("0", "-5", "abc", "9" * 40):
        g = req("/h", ip="198.51.100.51", user=f"y{bad[:3]}", headers={"x-cost": bad})
        assert sum(e.check(g).allowed for _ in range(12)) <= 10, bad


QUOTA = """
[[rule]]
name = "ai-tokens"
match = { path = "/generate*" }
key = "user"
algorithm = "quota"
limits = ["1000/day"]
cost = "response.header:X-Tokens-Used"
period = { reset = "00:00", tz = "UTC" }
"""


def test_cost_charged_after_the_response_and_daily_quota(make: MakeEngine, clock: FakeClock) -> None:
    e = make(QUOTA)
    clock.advance(18 * 3600)  # 18:00 UTC
    f = req("/generate", user="alice")
    v = e.check(f)
    assert v.allowed and header(v, "RateLimit") == '"ai-tokens";r=1000;t=0'
    e.after(f, v, 200, {"X-Tokens-Used": "600"})
    v = e.check(f)
    assert v.allowed, "400 tokens remain: admitted while budget remains"
    assert header(v, "RateLimit") == '"ai-tokens";r=400;t=21600'
    e.after(f, v, 200, {"x-tokens-used": "600"})  # the real cost may overshoot
    v = e.check(f)
    assert (v.allowed, v.status) == (False, 429)
    assert header(v, "Retry-After") == str(6 * 3600), "retry_after is the time to midnight"
    assert json.loads(v.body or b"")["reset"] == "2026-01-02T00:00:00Z"
    e.after(f, v, 429, {"x-tokens-used": "600"})  # a denied request is never charged
    clock.advance(6 * 3600)
    assert e.check(f).allowed
    assert e.check(req("/generate", user="bob")).allowed


def test_quota_budget_by_role(make: MakeEngine) -> None:
    e = make(
        QUOTA.replace(
            'limits = ["1000/day"]', 'limits = ["1000/day"]\ntiers = { claim = "role", OWNER = 3, READER = 0 }'
        )
    )
    v = e.check(req("/generate", user="o", user_attrs={"role": "OWNER"}))
    assert header(v, "RateLimit-Policy") == '"ai-tokens";q=3000;w=86400'
    assert e.check(req("/generate", user="r", user_attrs={"role": "READER"})).status == 429


@pytest.mark.redis
def test_store_down_allow(make: MakeEngine, events: list[Event]) -> None:
    e = make('[[rule]]\nname = "a"\nlimits = ["1/minute"]\n', storage="redis://127.0.0.1:1/11")
    assert all(e.check(req()).allowed for _ in range(3))
    assert e.store_errors >= 1 and "store_error" in [ev.kind for ev in events]


@pytest.mark.redis
def test_store_down_deny_is_503_with_retry_after(make: MakeEngine) -> None:
    e = make(
        "[ratewarden]\nstore_error_retry_after = 2\n"
        '[[rule]]\nname = "a"\nlimits = ["1/minute"]\non_store_error = "deny"\n',
        storage="redis://127.0.0.1:1/11",
    )
    v = e.check(req())
    assert (v.allowed, v.status, header(v, "Retry-After")) == (False, 503, "2")
    assert json.loads(v.body or b"")["error"] == "unavailable"


@pytest.mark.redis
def test_store_down_local_keeps_limiting_in_process(make: MakeEngine) -> None:
    e = make(
        '[[rule]]\nname = "a"\nlimits = ["2/minute"]\non_store_error = "local"\n', storage="redis://127.0.0.1:1/11"
    )
    assert [e.check(req()).allowed for _ in range(3)] == [True, True, False]


@pytest.mark.redis
async def test_engine_on_real_redis_db11(make: MakeEngine, clock: FakeClock) -> None:
    import uuid

    prefix = f"rwengine:{uuid.uuid4().hex[:8]}:"
    e = make(f'[ratewarden]\nkey_prefix = "{prefix}"\n[[rule]]\nname = "a"\nlimits = ["3/minute"]\n', storage=None)
    from ratewarden.storage import open_store

    store = open_store(rw_redis.URL, key_prefix=prefix)
    e2 = make(f'[ratewarden]\nkey_prefix = "{prefix}"\n[[rule]]\nname = "a"\nlimits = ["3/minute"]\n', storage=store)
    try:
        got = [e2.check(req()).allowed for _ in range(2)] + [(await e2.acheck(req())).allowed for _ in range(2)]
        assert got == [True, True, True, False]
        await e2.aclose()
    finally:
        rw_redis.delete_prefix(prefix)
    assert e.check(req()).allowed


async def test_counters_survive_a_restart_on_sqlite(tmp_path: object, clock: FakeClock) -> None:
    from ratewarden.engine import Engine

    url = f"sqlite:///{tmp_path}/rw.db"
    pol = '[[rule]]\nname = "save_chat"\nkey = "session"\nlimits = ["2/10 seconds"]\nalgorithm = "sliding-log"\n'
    f = req("/chat", headers={"cookie": "session=tok"})
    first = Engine(pol, storage=url, clock=clock)
    assert first.check(f).allowed and (await first.acheck(f)).allowed
    first.close()
    second = Engine(pol, storage=url, clock=clock)  # the backend restarted
    try:
        v = second.check(f)
        assert (v.status, header(v, "Retry-After")) == (429, "10")
        clock.advance(10)
        assert second.check(f).allowed
    finally:
        second.close()
