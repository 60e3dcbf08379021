"""Request-side hardening at the engine level: proxy headers read from the right, HEAD counted
as GET, paths matched as the router sees them, body/query/cookie keys read as the framework
reads them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rw_engine_helpers import MakeEngine, req

from ratewarden.policy import loads_policy
from ratewarden.policy.keys import client_address, parse_forwarded

FORWARDED = """
[ratewarden]
trusted_proxies = ["10.0.0.0/8"]
proxy_header = "forwarded"

[safelist]
ips = ["127.0.0.1", "::1"]

[[rule]]
name = "all"
limits = ["3/hour"]
algorithm = "fixed-window"
"""


def test_forwarded_is_read_from_the_right_past_a_padded_spoofed_element(make: MakeEngine) -> None:
    e = make(FORWARDED)
    admitted = 0
    for i in range(20):
        spoof = f"for=203.0.113.{i}" + "," * 16400  # the client's part, then the proxy appends the real hop
        admitted += e.check(req(ip="10.0.0.1", headers={"forwarded": spoof + ", for=198.51.100.7"})).allowed
    assert admitted == 3


def test_forwarded_cannot_claim_a_safelisted_address(make: MakeEngine) -> None:
    e = make(FORWARDED)
    admitted = 0
    for _ in range(10):
        h = {"forwarded": 'for="[::1]"' + "," * 16400 + ", for=198.51.100.7"}
        admitted += e.check(req(ip="10.0.0.1", headers=h)).allowed
    assert admitted == 3


def test_forwarded_parser_reads_quoted_elements_from_the_right() -> None:
    proxies = loads_policy(FORWARDED).settings.trusted_proxies
    fwd = 'for="1.2.3.4,5.6.7.8";by=x, for="[2001:db8::1]:80";proto=https, for=10.0.0.9'
    assert parse_forwarded(fwd)[-2:] == ["[2001:db8::1]:80", "10.0.0.9"]
    assert str(client_address("10.0.0.1", {"forwarded": fwd}, proxies, "forwarded")) == "2001:db8::1"
    # an unterminated quote in the client's part never swallows the proxy's element
    bad = 'for="203.0.113.9, for="198.51.100.7"'
    assert str(client_address("10.0.0.1", {"forwarded": bad}, proxies, "forwarded")) == "198.51.100.7"
    # an element without for= is malformed: stay at the trusted proxy, mint no key from it
    assert str(client_address("10.0.0.1", {"forwarded": "proto=https"}, proxies, "forwarded")) == "10.0.0.1"


GET_ONLY = """
[[rule]]
name = "reads"
match = { path = "/report", methods = ["GET"] }
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "heads"
match = { path = "/head-only", methods = ["HEAD"] }
limits = ["2/hour"]
algorithm = "fixed-window"
"""


def test_head_is_counted_by_a_get_rule(make: MakeEngine) -> None:
    e = make(GET_ONLY)
    assert [e.check(req("/report", method="HEAD")).allowed for _ in range(4)] == [True] * 3 + [False]
    assert not e.check(req("/report", method="GET")).allowed, "HEAD and GET share the rule's budget"


def test_a_rule_that_lists_head_matches_head_only(make: MakeEngine) -> None:
    e = make(GET_ONLY)
    assert all(e.check(req("/head-only", method="GET")).allowed for _ in range(5))
    assert [e.check(req("/head-only", method="HEAD")).allowed for _ in range(3)] == [True, True, False]


POSTS = """
[[rule]]
name = "user-posts"
match = { path = "/users/{id}/posts" }
limits = ["3/hour"]
algorithm = "fixed-window"
"""


def test_dot_segments_match_the_route_the_router_runs(make: MakeEngine) -> None:
    e = make(POSTS)
    # Starlette, Flask and Django route /users/../posts (from %2e%2e) to /users/{id}/posts with id=".."
    got = [e.check(req("/users/../posts")).allowed for _ in range(4)]
    assert got == [True] * 3 + [False]
    assert [e.check(req("/users/./posts", ip="198.51.100.9")).allowed for _ in range(4)] == [True] * 3 + [False]


def test_a_path_is_exempt_only_when_exempt_however_it_is_read(make: MakeEngine) -> None:
    e = make(
        """
[ratewarden]
exempt = ["/public/*"]

[[rule]]
name = "users"
match = { path = "/users/*" }
limits = ["2/hour"]
algorithm = "fixed-window"
"""
    )
    # normalised it is /public/x, but the router runs a /users/{id}/public/{f} handler: counted
    assert [e.check(req("/users/../public/x")).allowed for _ in range(3)] == [True, True, False]
    assert e.check(req("/public/x")).allowed and e.exempt(req("/public/x"))


# -- body:, query:, cookie: keys read what the handler reads (Starlette's rules by default) --------

KEYED = """
[[rule]]
name = "by-email"
match = { path = "/login" }
key = "body:email"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "by-nested"
match = { path = "/nested" }
key = "body:user.email"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "by-query"
match = { path = "/search" }
key = "query:email"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "by-cookie"
match = { path = "/app" }
key = "cookie:sid"
limits = ["3/hour"]
algorithm = "fixed-window"
"""


def _from_many_ips(e: Any, make_req: Any, n: int = 6) -> list[bool]:
    """``n`` requests from ``n`` addresses: only the key under test can tie them together."""
    return [e.check(make_req(f"203.0.113.{i + 1}")).allowed for i in range(n)]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_json_in_every_encoding_json_loads_accepts_is_the_same_key(make: MakeEngine, encoding: str) -> None:
    e = make(KEYED)
    body = '{"email": "victim@example.com"}'
    for _ in range(3):
        assert e.check(
            req("/login", "198.51.100.1", "POST", body=body.encode(), content_type="application/json")
        ).allowed
    got = _from_many_ips(
        e, lambda ip: req("/login", ip, "POST", body=body.encode(encoding), content_type="application/json")
    )
    assert got == [False] * 6


@pytest.mark.parametrize("ctype", ["text/plain", "", "application/octet-stream"])
def test_json_sent_as_another_type_is_read_as_starlette_reads_it(make: MakeEngine, ctype: str) -> None:
    e = make(KEYED)
    body = b'  {"email": "victim@example.com"}'
    got = _from_many_ips(e, lambda ip: req("/login", ip, "POST", body=body, content_type=ctype))
    assert got == [True] * 3 + [False] * 3


def test_a_literal_dotted_field_never_shadows_the_nested_one(make: MakeEngine) -> None:
    e = make(KEYED)
    n = iter(range(100))

    def make_req(ip: str) -> Any:
        doc = {"user": {"email": "victim@example.com"}, "user.email": f"rotating-{next(n)}"}
        return req("/nested", ip, "POST", body=json.dumps(doc).encode(), content_type="application/json")

    assert _from_many_ips(e, make_req) == [True] * 3 + [False] * 3


def test_a_repeated_query_or_form_field_is_the_last_one_as_in_starlette(make: MakeEngine) -> None:
    e = make(KEYED)
    n = iter(range(100))
    got = _from_many_ips(e, lambda ip: req("/search", ip, query_string=f"email=r{next(n)}&email=victim"))
    assert got == [True] * 3 + [False] * 3
    form = "application/x-www-form-urlencoded"
    got = _from_many_ips(
        e, lambda ip: req("/login", ip, "POST", body=f"email=r{next(n)}&email=victim".encode(), content_type=form)
    )
    assert got == [True] * 3 + [False] * 3


@pytest.mark.parametrize(
    "cookie",
    ["sid=rotating-{i}; sid=victim", 'x="a\\"b; sid=victim; y=1', 'bad"cookie{i}; sid=victim', "a=b=c{i}; sid=victim"],
)
def test_a_duplicate_or_malformed_cookie_never_hides_the_real_one(make: MakeEngine, cookie: str) -> None:
    e = make(KEYED)
    n = iter(range(100))
    got = _from_many_ips(e, lambda ip: req("/app", ip, headers={"cookie": cookie.replace("{i}", str(next(n)))}))
    assert got == [True] * 3 + [False] * 3


def test_a_differing_repeat_is_absent_when_the_framework_is_unknown() -> None:
    from ratewarden.policy.keys import FieldReader, RequestContext

    policy = loads_policy(KEYED)
    refuse = FieldReader("refuse")
    ctx = RequestContext(req("/search", query_string="email=a&email=b", reader=refuse), policy, lambda: 0.0)
    assert ctx.query("email") is None
    ctx = RequestContext(req("/search", query_string="email=a&email=a", reader=refuse), policy, lambda: 0.0)
    assert ctx.query("email") == "a"


OVERSIZE = """
[ratewarden]
body_limit = 64

[[rule]]
name = "login"
match = { path = "/login" }
key = "body:email"
limits = ["3/hour"]
algorithm = "fixed-window"
on_oversize_body = "deny"
"""


def test_a_body_over_body_limit_is_refused_with_413_when_the_rule_says_deny(make: MakeEngine) -> None:
    e = make(OVERSIZE)
    big = b'{"email": "victim@example.com", "pad": "' + b"x" * 100 + b'"}'
    v = e.check(req("/login", method="POST", body=big[:64], body_truncated=True, content_type="application/json"))
    assert (v.allowed, v.status) == (False, 413)
    assert json.loads(v.body or b"")["error"] == "body_too_large"
    assert all(name.lower() != "retry-after" for name, _ in v.headers), "no wait makes it pass"
    small = b'{"email": "victim@example.com"}'
    got = [e.check(req("/login", method="POST", body=small, content_type="application/json")).allowed for _ in range(4)]
    assert got == [True, True, True, False]
    # an engine handed the whole body (no adapter cap) refuses it the same way
    assert e.check(req("/login", method="POST", body=big, content_type="application/json")).status == 413


def test_by_default_a_body_over_body_limit_takes_the_fallback_key(make: MakeEngine) -> None:
    e = make(OVERSIZE.replace('on_oversize_body = "deny"\n', ""))
    got = [
        e.check(req("/login", method="POST", body=b"{", body_truncated=True, content_type="application/json")).allowed
        for _ in range(4)
    ]
    assert got == [True, True, True, False]  # keyed by the client's ip


def test_on_oversize_body_needs_a_body_key() -> None:
    from ratewarden.policy import PolicyError

    with pytest.raises(PolicyError, match="on_oversize_body"):
        loads_policy(OVERSIZE.replace('key = "body:email"', 'key = "ip"'))
    with pytest.raises(PolicyError, match="on_oversize_body"):
        loads_policy(OVERSIZE.replace('"deny"', '"drop"'))


def test_a_multipart_form_field_is_read_as_starlette_reads_it(make: MakeEngine) -> None:
    e = make(KEYED)
    n = iter(range(100))

    def make_req(ip: str) -> Any:
        parts = [("email", f"r{next(n)}"), ("email", "victim")]  # python-multipart/Starlette: the last
        body = "".join(f'--xx\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in parts)
        body += '--xx\r\nContent-Disposition: form-data; name="email"; filename="e.txt"\r\n\r\nfile\r\n--xx--\r\n'
        return req("/login", ip, "POST", body=body.encode(), content_type="multipart/form-data; boundary=xx")

    assert _from_many_ips(e, make_req) == [True] * 3 + [False] * 3
