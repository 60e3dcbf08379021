"""Bad input never crashes and never bypasses: malformed proxy headers, a 1 MiB header, invalid JSON
in a body: rule, a body above the cap, non-UTF-8 paths, and arbitrary facts (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rw_engine_helpers import MakeEngine, header, req

from ratewarden import FakeClock
from ratewarden.engine import Engine, RequestFacts
from ratewarden.policy import loads_policy

BODY = """
[ratewarden]
trusted_proxies = ["10.0.0.0/8"]
body_limit = 1024

[[rule]]
name = "login"
match = { path = "/login", methods = ["POST"] }
key = "body:email|lower"
limits = ["2/minute"]
algorithm = "fixed-window"
"""


def _post(body: bytes | None, ctype: str = "application/json", **kw: Any) -> RequestFacts:
    return req("/login", method="POST", body=body, content_type=ctype, **kw)


def test_body_key_from_json_and_form(make: MakeEngine) -> None:
    e = make(BODY)
    assert e.needs_body(_post(None)) and not e.needs_body(req("/other", method="POST"))
    assert not e.needs_body(req("/login", method="GET"))
    for i in range(4):
        ip = f"198.51.100.{i}"
        body = b'{"email": "Alice@Example.com"}' if i % 2 else b"email=ALICE%40example.com&pw=x"
        ctype = "application/json" if i % 2 else "application/x-www-form-urlencoded"
        assert e.check(_post(body, ctype, ip=ip)).allowed == (i < 2), i


def test_invalid_json_falls_back_to_ip_and_is_limited(make: MakeEngine) -> None:
    e = make(BODY)
    for bad in (b"{not json", b"\xff\xfe\x00garbage", b'{"email": {"nested": 1}}', b"[1,2]", b"", b'{"email": ""}'):
        e2 = make(BODY)
        got = [e2.check(_post(bad)).allowed for _ in range(3)]
        assert got == [True, True, False], bad
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    assert e.check(_post(deep[:1024])).allowed


def test_body_above_the_cap_is_not_parsed_and_never_bypasses(make: MakeEngine) -> None:
    e = make(BODY)
    big = b'{"email": "x%d@example.com", "pad": "' + b"a" * 2000 + b'"}'
    got = [e.check(_post(big % i, body_truncated=False)).allowed for i in range(3)]
    assert got == [True, True, False], "over body_limit: keyed by ip, not by a rotating e-mail"
    e2 = make(BODY)
    got = [e2.check(_post(b'{"email": "y%d@example.com"}' % i, body_truncated=True)).allowed for i in range(3)]
    assert got == [True, True, False]


def test_a_one_mebibyte_header_is_hashed_not_stored(make: MakeEngine) -> None:
    e = make('[[rule]]\nname = "k"\nkey = "header:X-Api-Key"\nlimits = ["2/minute"]\nalgorithm = "fixed-window"\n')
    huge = "k" * (1 << 20)
    got = [e.check(req(headers={"x-api-key": huge, "x-forwarded-for": huge})).allowed for _ in range(3)]
    assert got == [True, True, False]
    store = e.store
    longest = max(len(k) for t in store._tables.values() for k in t.data) if hasattr(store, "_tables") else 0
    assert longest < 200
    assert e.check(req(headers={"x-api-key": huge[:-1] + "j"})).allowed, "a different value is another key"


def test_malformed_forwarding_headers_through_a_trusted_proxy(make: MakeEngine) -> None:
    e = make(BODY.replace('key = "body:email|lower"', 'key = "ip"'))
    garbage = [
        "",
        ",",
        "unknown",
        "1.2.3",
        "1.2.3.4.5",
        "[::1",
        "for=",
        "999.1.1.1",
        "\x00\x01",
        "1.1.1.1;" * 10_000,
        "::::",
    ]
    admitted = sum(
        e.check(
            req("/login", method="POST", ip="10.0.0.9", headers={"x-forwarded-for": g, "forwarded": g}, body=b"")
        ).allowed
        for g in garbage
    )
    assert admitted == 2, "all garbage stays keyed by the proxy: it never mints fresh keys"


def test_non_utf8_paths(make: MakeEngine) -> None:
    e = make('[[rule]]\nname = "p"\nmatch = { path = "/files/*" }\nlimits = ["2/minute"]\n')
    paths = ["/files/\udcff\udcfe", "/files/\ufffd", "/files/%ff", "/files/\x00"]
    assert sum(e.check(req(p)).allowed for p in paths) == 2
    assert e.check(req("\udcff")).allowed


def test_weird_methods_hosts_and_queries(make: MakeEngine) -> None:
    e = make(
        '[[rule]]\nname = "q"\nmatch = { host = "*.example.com" }\nkey = "query:token+cookie:sid"\n'
        'limits = ["1/minute"]\nfallback = "ip"\n'
    )
    f = req(method="x" * 1000, host="API.Example.com:8443", query_string="token=a&token=b", headers={"cookie": "sid=1"})
    assert e.check(f).allowed and not e.check(f).allowed
    g = req(host="evil.com", query_string="%%%&&&=", headers={"cookie": '"; ; =;sid'})
    assert e.check(g).allowed and e.check(g).allowed


facts_strategy = st.builds(
    RequestFacts,
    method=st.text(max_size=10),
    path=st.text(max_size=60),
    client_ip=st.one_of(st.none(), st.text(max_size=40), st.ip_addresses().map(str)),
    headers=st.dictionaries(
        st.sampled_from(
            ["x-forwarded-for", "forwarded", "cookie", "authorization", "x-api-key", "content-type", "x-cost"]
        ),
        st.text(max_size=80),
        max_size=5,
    ),
    query_string=st.text(max_size=40),
    host=st.text(max_size=30),
    user=st.one_of(st.none(), st.text(max_size=10)),
    user_attrs=st.dictionaries(st.sampled_from(["role", "plan"]), st.one_of(st.text(max_size=8), st.integers())),
    body=st.one_of(st.none(), st.binary(max_size=100)),
    body_truncated=st.booleans(),
    content_type=st.sampled_from(["", "application/json", "application/x-www-form-urlencoded", "text/plain"]),
)

FUZZ_POLICY = """
[ratewarden]
trusted_proxies = ["10.0.0.0/8", "::1/128"]
headers = "both"

[jwt]
secret = "0123456789abcdef0123456789"

[[rule]]
name = "a"
match = { path = "/*", methods = ["GET", "POST"] }
key = "jwt:sub"
limits = ["5/minute", "50/hour"]
tiers = { claim = "role", OWNER = 3 }

[[rule]]
name = "b"
key = "body:user.email|lower+header:X-Api-Key"
limits = ["3/minute"]
cost = "header:X-Cost"

[[rule]]
name = "c"
key = "cookie:sid"
fallback = "skip"
limits = ["100/day"]
algorithm = "quota"
cost = "response.header:X-Tokens"

[[ban]]
name = "f"
match = { status = [401] }
max = 2
within = 60
ban_for = 60
"""


_FUZZ = loads_policy(FUZZ_POLICY)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(facts=facts_strategy, status=st.sampled_from([200, 401, 500]))
def test_arbitrary_facts_never_raise(facts: RequestFacts, status: int) -> None:
    kinds: list[str] = []
    e = Engine(_FUZZ, clock=FakeClock(), on_event=lambda ev: kinds.append(ev.kind))
    try:
        v = e.check(facts)
        assert v.status in (200, 403, 429)
        if not v.allowed:
            assert v.body is not None
            ra = header(v, "Retry-After")
            assert ra is None or int(ra) >= 1
        e.after(facts, v, status, {"X-Tokens": "5"})
        e.needs_body(facts)
        e.exempt(facts)
        assert "error" not in kinds, "an internal error was hidden"
    finally:
        e.close()


def test_internal_errors_never_reach_the_app(make: MakeEngine) -> None:
    class Weird(dict[str, str]):
        def get(self, *a: object, **k: object) -> str:  # type: ignore[override]
            raise RuntimeError("adapter bug")

    e = make('[[rule]]\nname = "h"\nkey = "header:x"\nlimits = ["1/minute"]\n')
    v = e.check(req(headers=Weird()))
    assert v.allowed and v.status == 200
    deny = make(
        '[ratewarden]\non_store_error = "deny"\n[[rule]]\nname = "h"\nkey = "header:x"\nlimits = ["1/minute"]\n'
    )
    v = deny.check(req(headers=Weird()))
    assert (v.allowed, v.status) == (False, 503)
