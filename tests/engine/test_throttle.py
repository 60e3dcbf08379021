"""Engine throttling at the RequestFacts level: first 429, exact Retry-After, bodies, headers,
all-or-nothing across rules, exempt paths, shadow rules, safelist and blocklist."""

from __future__ import annotations

import json

import pytest
from rw_engine_helpers import MakeEngine, header, req

from ratewarden import FakeClock
from ratewarden.engine import Engine
from ratewarden.events import Event

LOGIN = """
[ratewarden]
headers = "both"

[[rule]]
name = "login"
match = { path = "/api/v1/auth/login", methods = ["POST"] }
key = "ip"
limits = ["5/20 minutes"]
algorithm = "sliding-log"
"""


def test_sixth_request_gets_429_with_exact_retry_after(make: MakeEngine, clock: FakeClock) -> None:
    e = make(LOGIN)
    f = req("/api/v1/auth/login", method="POST")
    for i in range(5):
        v = e.check(f)
        assert v.allowed and v.status == 200, i
        assert header(v, "RateLimit") == f'"login";r={4 - i};t=1200'
        assert header(v, "Retry-After") is None
        clock.advance(10)
    v = e.check(f)
    assert (v.allowed, v.status, v.rule) == (False, 429, "login")
    # the first request (at t=0) leaves the window at t=1200; we are at t=50
    assert v.retry_after == pytest.approx(1150)
    assert header(v, "Retry-After") == "1150"
    assert header(v, "RateLimit-Policy") == '"login";q=5;w=1200'
    assert header(v, "RateLimit") == '"login";r=0;t=1190'  # t: until fully restored
    assert (header(v, "X-RateLimit-Limit"), header(v, "X-RateLimit-Remaining")) == ("5", "0")
    body = json.loads(v.body or b"")
    assert body == {
        "error": "rate_limited",
        "message": "Too many requests; retry in 1150 seconds.",
        "retry_after": 1150,
        "rule": "login",
        "limit": 5,
        "remaining": 0,
        "reset": "2026-01-01T00:20:40Z",  # when the window is empty again
    }
    clock.advance(1149)
    assert not e.check(f).allowed, "one second early is still denied"
    clock.advance(1)
    assert e.check(f).allowed, "retrying after exactly retry_after succeeds"


def test_other_paths_methods_and_clients_are_not_counted(make: MakeEngine) -> None:
    e = make(LOGIN)
    for _ in range(5):
        assert e.check(req("/api/v1/auth/login", method="POST")).allowed
    assert not e.check(req("/api/v1/auth/login", method="POST")).allowed
    assert e.check(req("/api/v1/auth/login", method="GET")).allowed
    assert e.check(req("/other", method="POST")).allowed
    assert e.check(req("/api/v1/auth/login", method="POST", ip="198.51.100.8")).allowed
    # path tricks cannot slip past the rule
    for path in ("//api/v1/auth/login", "/api/./v1/auth/login", "/api/v1/x/../auth/login", "/api/v1/auth/login?x=1"):
        assert not e.check(req(path, method="POST")).allowed, path


def test_all_or_nothing_across_rules(make: MakeEngine) -> None:
    e = make(
        """
[[rule]]
name = "all"
limits = ["10/minute"]
algorithm = "fixed-window"

[[rule]]
name = "sync"
match = { path = "/sync" }
limits = ["2/minute"]
algorithm = "fixed-window"
"""
    )
    assert e.check(req("/sync")).allowed
    assert e.check(req("/sync")).allowed
    for _ in range(5):
        v = e.check(req("/sync"))
        assert not v.allowed and v.rule == "sync"
    # the denied /sync requests consumed nothing in "all": 8 of 10 are left
    v = e.check(req("/home"))
    assert header(v, "RateLimit") == '"all";r=7;t=60'
    states = {s.name: s.remaining for s in v.decisions}
    assert states == {"all": 7}


def test_every_applied_policy_is_listed_in_draft_headers(make: MakeEngine) -> None:
    e = make(
        """
[[rule]]
name = "session"
key = "session"
limits = ["5/10 minutes", "20/hour"]
algorithm = "sliding-log"
"""
    )
    v = e.check(req("/", headers={"cookie": "session=abc"}))
    assert header(v, "RateLimit-Policy") == '"session-600s";q=5;w=600, "session-3600s";q=20;w=3600'
    assert header(v, "RateLimit") == '"session-600s";r=4;t=600, "session-3600s";r=19;t=3600'


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("draft", ["RateLimit-Policy", "RateLimit"]),
        ("legacy", ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]),
        ("both", ["RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]),
        ("none", []),
    ],
)
def test_header_modes(make: MakeEngine, mode: str, names: list[str]) -> None:
    e = make(f'[ratewarden]\nheaders = "{mode}"\n[[rule]]\nname = "a"\nlimits = ["3/minute"]\n')
    v = e.check(req())
    assert [k for k, _ in v.headers] == names


def test_legacy_reset_epoch(make: MakeEngine, clock: FakeClock) -> None:
    e = make(
        '[ratewarden]\nheaders = "legacy"\nlegacy_reset = "epoch"\n'
        '[[rule]]\nname = "a"\nlimits = ["3/minute"]\nalgorithm = "fixed-window"\n'
    )
    v = e.check(req())
    assert header(v, "X-RateLimit-Reset") == str(int(clock()) + 60)


def test_s0_body_shape(make: MakeEngine, clock: FakeClock) -> None:
    e = make(
        """
[response]
body = "minimal"

[[rule]]
name = "save_chat"
key = "header:X-Session-Token"
limits = ["2/10 seconds"]
algorithm = "sliding-log"
"""
    )
    f = req("/chat", headers={"x-session-token": "tok-1"})
    assert e.check(f).allowed
    clock.advance(3)
    assert e.check(f).allowed
    v = e.check(f)
    assert v.status == 429 and json.loads(v.body or b"") == {"error": "rate_limited", "retry_after": 7}
    assert header(v, "Retry-After") == "7"
    clock.advance(7)
    assert e.check(f).allowed


def test_s3_body_shape(make: MakeEngine, clock: FakeClock) -> None:
    e = make(
        """
[response]
code = "RATE_LIMIT_EXCEEDED"
message = "Too many requests. Please wait {retry_after} seconds."

[response.body]
error = "code"
message = "message"
cooldownSeconds = "retry_after"
retryAfter = "retry_after"
resetTime = "reset"
quotaRemaining = "remaining"

[[rule]]
name = "session"
key = "session"
limits = ["5/10 minutes", "20/hour"]
algorithm = "sliding-log"
"""
    )
    f = req(headers={"cookie": "session=s1"})
    for _ in range(5):
        assert e.check(f).allowed
    v = e.check(f)
    assert json.loads(v.body or b"") == {
        "error": "RATE_LIMIT_EXCEEDED",
        "message": "Too many requests. Please wait 600 seconds.",
        "cooldownSeconds": 600,
        "retryAfter": 600,
        "resetTime": "2026-01-01T00:10:00Z",
        "quotaRemaining": 0,
    }


def test_exempt_paths_are_never_counted(make: MakeEngine) -> None:
    e = make(
        """
[ratewarden]
exempt = ["/healthz", "/static/*"]

[[rule]]
name = "all"
limits = ["2/minute"]
exempt = ["/metrics"]
"""
    )
    for path in ("/healthz", "/static/app.js", "/metrics") * 20:
        v = e.check(req(path))
        assert v.allowed and v.headers == [], path
    assert e.exempt(req("/healthz")) and not e.exempt(req("/metrics"))
    # exempt only when exempt however the path is read: routers do not collapse "//" (a 404 there)
    assert not e.exempt(req("//healthz")) and not e.exempt(req("/users/../healthz"))
    assert e.check(req("/")).allowed and e.check(req("/")).allowed
    assert not e.check(req("/")).allowed


def test_shadow_rules_decide_log_and_count_but_never_deny(make: MakeEngine, events: list[Event]) -> None:
    e = make('[ratewarden]\nreadable_keys = ["ip"]\n[[rule]]\nname = "trial"\nlimits = ["2/minute"]\nshadow = true\n')
    for _ in range(6):
        v = e.check(req("/x"))
        assert v.allowed and v.status == 200 and v.headers == []
    assert [ev.kind for ev in events] == ["shadow"] * 4
    assert (
        events[0].rule == "trial" and events[0].key == "ip=198.51.100.7" and events[0].retry_after == 30
    )  # gcra 2/minute
    assert e.events.counts["shadow", "trial"] == 4


def test_shadow_rule_beside_a_real_rule(make: MakeEngine) -> None:
    e = make(
        '[[rule]]\nname = "real"\nlimits = ["3/minute"]\n'
        '[[rule]]\nname = "trial"\nlimits = ["1/minute"]\nshadow = true\n'
    )
    assert [e.check(req()).allowed for _ in range(4)] == [True, True, True, False]


SAFE = """
[[rule]]
name = "all"
limits = ["1/minute"]

[safelist]
ips = ["127.0.0.1", "10.1.0.0/16"]
header_secret = { header = "X-Service-Token", env = "SERVICE_SECRET" }

[blocklist]
ips = ["203.0.113.0/24", "2001:db8:bad::/48"]
"""


def test_safelist_by_cidr_and_secret_header(make: MakeEngine) -> None:
    e = make(SAFE, env={"SERVICE_SECRET": "the-service-secret"})
    for ip in ("127.0.0.1", "10.1.200.3"):
        assert all(e.check(req(ip=ip)).allowed for _ in range(5)), ip
    ok = {"x-service-token": "the-service-secret"}
    assert all(e.check(req(ip="198.51.100.9", headers=ok)).allowed for _ in range(5))
    assert e.check(req(ip="198.51.100.10", headers={"x-service-token": "the-service-secreT"})).allowed
    assert not e.check(req(ip="198.51.100.10", headers={"x-service-token": "the-service-secret "})).allowed
    assert e.check(req(ip="198.51.100.11", headers={"x-service-token": "\udcff" * 3})).allowed
    assert not e.check(req(ip="198.51.100.11")).allowed


def test_blocklist_is_403(make: MakeEngine, events: list[Event]) -> None:
    e = make(SAFE, env={"SERVICE_SECRET": "the-service-secret"})
    for ip in ("203.0.113.77", "2001:db8:bad:1::5"):
        v = e.check(req("/a", ip=ip))
        assert (v.allowed, v.status) == (False, 403)
        assert json.loads(v.body or b"")["error"] == "blocked"
        assert header(v, "Retry-After") is None
    assert [ev.kind for ev in events] == ["block", "block"] and events[0].client_ip == "203.0.113.77"


def test_throttle_events_are_logged_with_fields(
    make: MakeEngine, events: list[Event], caplog: pytest.LogCaptureFixture
) -> None:
    e = make('[ratewarden]\nreadable_keys = ["user"]\n[[rule]]\nname = "all"\nkey = "user"\nlimits = ["1/minute"]\n')
    caplog.set_level("INFO", logger="ratewarden")
    e.check(req("/p", method="POST", user="alice"))
    e.check(req("/p", method="POST", user="alice"))
    (ev,) = events
    assert (ev.kind, ev.rule, ev.key, ev.client_ip, ev.method, ev.path, ev.user, ev.retry_after, ev.status) == (
        "throttle",
        "all",
        "user=alice",
        "198.51.100.7",
        "POST",
        "/p",
        "alice",
        60.0,
        429,
    )
    (rec,) = [r for r in caplog.records if getattr(r, "rw_event", None) == "throttle"]
    assert rec.name == "ratewarden"
    assert (rec.rule, rec.key, rec.client_ip, rec.method, rec.path, rec.user, rec.retry_after) == (  # type: ignore[attr-defined]
        "all",
        "user=alice",
        "198.51.100.7",
        "POST",
        "/p",
        "alice",
        60.0,
    )


def test_a_raising_callback_is_ignored(make: MakeEngine) -> None:
    def boom(ev: Event) -> None:
        raise RuntimeError("subscriber bug")

    e = make('[[rule]]\nname = "all"\nlimits = ["1/minute"]\n', on_event=boom)
    assert e.check(req()).allowed
    assert not e.check(req()).allowed


def test_missing_key_falls_back_to_ip_not_a_shared_bucket(make: MakeEngine) -> None:
    e = make('[[rule]]\nname = "u"\nkey = "user"\nlimits = ["1/minute"]\n')
    assert e.check(req(ip="198.51.100.1")).allowed
    assert e.check(req(ip="198.51.100.2")).allowed, "two anonymous clients do not share one bucket"
    assert not e.check(req(ip="198.51.100.1")).allowed
    assert e.check(req(ip="198.51.100.1", user="bob")).allowed
    skip = make('[[rule]]\nname = "u"\nkey = "user"\nfallback = "skip"\nlimits = ["1/minute"]\n')
    assert all(skip.check(req()).allowed for _ in range(3))


def test_key_combinations_and_filters(make: MakeEngine) -> None:
    e = make('[[rule]]\nname = "k"\nkey = "ip+header:X-Api-Key|lower"\nlimits = ["1/minute"]\n')
    assert e.check(req(headers={"x-api-key": "ABC"})).allowed
    assert not e.check(req(headers={"x-api-key": "abc"})).allowed
    assert e.check(req(ip="198.51.100.99", headers={"x-api-key": "abc"})).allowed


async def test_acheck_matches_check(make: MakeEngine, clock: FakeClock) -> None:
    e = make(LOGIN)
    f = req("/api/v1/auth/login", method="POST")
    got = [(await e.acheck(f)).status for _ in range(6)]
    assert got == [200] * 5 + [429]
    v = await e.acheck(f)
    assert header(v, "Retry-After") == "1200"
    clock.advance(1200)
    assert (await e.acheck(f)).allowed


def test_engine_accepts_a_path_text_or_policy(tmp_path: object, clock: FakeClock) -> None:
    from pathlib import Path

    from ratewarden.policy import loads_policy

    f = Path(str(tmp_path)) / "rw.toml"
    f.write_text(LOGIN)
    for policy in (str(f), f, LOGIN, loads_policy(LOGIN)):
        e = Engine(policy, clock=clock)
        assert e.policy.rules[0].name == "login"
        e.close()
    with pytest.raises(TypeError):
        Engine(42)


def test_peek_is_a_status_view_and_reset_forgets(make: MakeEngine, events: list[Event]) -> None:
    e = make(
        '[[rule]]\nname = "session"\nkey = "session"\nlimits = ["5/10 minutes", "20/hour"]\nalgorithm = "sliding-log"\n'
        '[[ban]]\nname = "b"\nmatch = { status = [401] }\nmax = 1\nwithin = 60\nban_for = 600\n'
    )
    f = req(headers={"cookie": "session=s1"})
    for _ in range(3):
        e.check(f)
    for _ in range(3):
        v = e.peek(f)
        assert v.allowed and [(d.name, d.remaining) for d in v.decisions] == [
            ("session-600s", 2),
            ("session-3600s", 17),
        ]
    e.check(f)
    e.check(f)
    v = e.peek(f)
    assert not v.allowed and v.status == 429 and header(v, "Retry-After") == "600"
    assert events == [], "peek emits nothing"
    e.reset("session", "session=s1")
    assert [(d.name, d.remaining) for d in e.peek(f).decisions] == [("session-600s", 5), ("session-3600s", 20)]
    e.after(f, e.check(f), 401, {})
    assert e.check(f).status == 403
    e.reset("b", "ip=198.51.100.7")
    assert e.check(f).allowed
    with pytest.raises(KeyError):
        e.reset("nope", "ip=1.2.3.4")


async def test_check_key_for_the_decision_service(make: MakeEngine, clock: FakeClock, events: list[Event]) -> None:
    e = make(
        '[[rule]]\nname = "login"\nkey = "body:email"\nlimits = ["2/minute"]\nalgorithm = "fixed-window"\n'
        'tiers = { attr = "plan", pro = 2 }\n'
        '[[rule]]\nname = "trial"\nlimits = ["1/minute"]\nshadow = true\n'
    )
    assert [e.check_key("login", "alice").allowed for _ in range(3)] == [True, True, False]
    v = await e.acheck_key("login", "alice")
    assert (v.status, header(v, "Retry-After"), header(v, "RateLimit")) == (429, "60", '"login";r=0;t=60')
    assert sum(e.check_key("login", "bob", attrs={"plan": "pro"}).allowed for _ in range(9)) == 4
    assert e.check_key("login", "carol", cost=3).status == 429
    assert [e.check_key("trial", "x").allowed for _ in range(3)] == [True, True, True]
    assert [ev.kind for ev in events].count("shadow") == 2
    with pytest.raises(KeyError):
        e.check_key("nope", "x")


def test_for_rule_shares_the_base_store_settings_and_events(make: MakeEngine, events: list[Event]) -> None:
    base = make(
        '[ratewarden]\nheaders = "legacy"\nalgorithm = "fixed-window"\n'
        '[blocklist]\nips = ["203.0.113.0/24"]\n'
        '[[rule]]\nname = "all"\nlimits = ["100/minute"]\n'
    )
    route = Engine.for_rule({"name": "route", "limits": ["1/minute"]}, base=base)
    assert route.store is base.store and route.policy.rules[0].algorithm == "fixed-window"
    v = route.check(req("/r"))
    assert v.allowed and v.headers[0][0] == "X-RateLimit-Limit"
    assert route.check(req("/r")).status == 429
    assert [ev.kind for ev in events] == ["throttle"], "the base engine's subscribers see route events"
    assert route.check(req("/r", ip="203.0.113.5")).allowed, "the blocklist stays with the base engine"
    alone = Engine.for_rule({"name": "solo", "limits": ["1/minute"]})
    assert alone.policy.rules[0].algorithm == "gcra"
    alone.close()
