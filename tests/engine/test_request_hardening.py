"""Request-side hardening at the engine level: proxy headers read from the right, HEAD counted
as GET, paths matched as the router sees them, legacy headers with one value."""

from __future__ import annotations

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
