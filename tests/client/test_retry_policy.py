"""The retry rules on their own: header parsing, waits, jitter, budget (no server needed)."""

from __future__ import annotations

from email.utils import formatdate

import httpx
import pytest

from ratewarden.client import RetryPolicy, RetryTransport, parse_rate_limit, parse_retry_after
from ratewarden.errors import ConfigError

NOW = 1_767_225_600.0


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert parse_retry_after("17", NOW) == 17.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    assert parse_retry_after(formatdate(NOW + 30, usegmt=True), NOW) == 30.0
    assert parse_retry_after(formatdate(NOW - 30, usegmt=True), NOW) == 0.0  # in the past: now
    for bad in (None, "", "soon", "-5", "1.5", "9" * 40, "Mon, 99 Foo 2026 99:99:99 GMT"):
        assert parse_retry_after(bad, NOW) is None


def test_rate_limit_field_items() -> None:
    items = parse_rate_limit('"login";r=0;t=12, "hour";r=3;t=3000, tok;r=1;t=2')
    assert [(i.name, i.remaining, i.reset) for i in items] == [("login", 0, 12), ("hour", 3, 3000), ("tok", 1, 2)]
    assert parse_rate_limit('"a";t=5') == [("a", None, 5)]
    assert parse_rate_limit("") == []
    assert [i.name for i in parse_rate_limit('"a";r=x;t=1, ???, "b";r=0;t=4')][-1] == "b"  # bad members skipped


def _policy(**kw: object) -> RetryPolicy:
    return RetryPolicy(clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def test_the_wait_is_retry_after_then_rate_limit_t_then_backoff() -> None:
    p = _policy()
    assert p.delay("GET", 429, {"Retry-After": "7", "RateLimit": '"a";r=0;t=50'}, 0, 0.0) == 7.0
    assert p.delay("GET", 429, {"RateLimit": '"a";r=0;t=12, "b";r=0;t=30, "c";r=4;t=99'}, 0, 0.0) == 30.0
    assert [p.delay("GET", 503, {}, n, 0.0) for n in range(3)] == [0.5, 1.0, 2.0]


def test_only_429_and_503_and_only_idempotent_methods() -> None:
    p = _policy()
    assert p.delay("GET", 500, {"Retry-After": "1"}, 0, 0.0) is None
    assert p.delay("GET", 200, {"Retry-After": "1"}, 0, 0.0) is None
    for method in ("POST", "PATCH", "post"):
        assert p.delay(method, 429, {"Retry-After": "1"}, 0, 0.0) is None
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "get"):
        assert p.delay(method, 429, {"Retry-After": "1"}, 0, 0.0) == 1.0
    assert _policy(retry_unsafe=True).delay("POST", 429, {"Retry-After": "1"}, 0, 0.0) == 1.0


def test_jitter_is_added_never_taken_and_trimmed_to_the_budget() -> None:
    p = _policy(random=lambda: 0.999999, max_wait=60)
    assert p.delay("GET", 429, {"Retry-After": "5"}, 0, 0.0) == pytest.approx(5.5, abs=1e-3)
    assert p.delay("GET", 429, {"Retry-After": "30"}, 0, 0.0) == pytest.approx(31.0, abs=1e-3)  # at most 1 s
    assert p.delay("GET", 429, {"Retry-After": "30"}, 0, 29.5) == 30.5  # trimmed: 29.5 + 30.5 = max_wait
    assert p.delay("GET", 429, {"Retry-After": "31"}, 0, 29.5) is None  # does not fit: no sleep at all


def test_retries_are_bounded() -> None:
    p = _policy(max_retries=2)
    assert p.delay("GET", 429, {"Retry-After": "1"}, 1, 0.0) == 1.0
    assert p.delay("GET", 429, {"Retry-After": "1"}, 2, 0.0) is None
    assert _policy(max_retries=0).delay("GET", 429, {"Retry-After": "1"}, 0, 0.0) is None


def test_wait_first_after_r_zero_is_per_origin_and_within_the_budget() -> None:
    now = [NOW]
    p = RetryPolicy(wait_when_empty=True, max_wait=10, clock=lambda: now[0])
    p.observe("http://a:80", {"RateLimit": '"x";r=0;t=4'})
    p.observe("http://b:80", {"RateLimit": '"x";r=0;t=40'})
    assert p.wait_first("http://a:80") == 4.0
    assert p.wait_first("http://b:80") == 0.0  # longer than max_wait: the server decides
    assert p.wait_first("http://c:80") == 0.0
    now[0] += 3
    assert p.wait_first("http://a:80") == 1.0
    p.observe("http://a:80", {"RateLimit": '"x";r=2;t=4'})
    assert p.wait_first("http://a:80") == 0.0
    off = RetryPolicy(clock=lambda: NOW)
    off.observe("http://a:80", {"RateLimit": '"x";r=0;t=4'})
    assert off.wait_first("http://a:80") == 0.0


BAD = [
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": 1.5}, "max_retries"),
    ({"max_wait": -1}, "max_wait"),
    ({"max_wait": float("inf")}, "max_wait"),
    ({"max_wait": float("nan")}, "max_wait"),
    ({"jitter": 2}, "jitter"),
]


@pytest.mark.parametrize(("kw", "word"), BAD)
def test_bad_settings_are_refused_by_name(kw: dict[str, object], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        RetryTransport(**kw)  # type: ignore[arg-type]


def test_a_503_without_a_hint_backs_off_and_the_last_answer_is_returned() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(503, text="busy")

    waits: list[float] = []
    transport = RetryTransport(httpx.MockTransport(handler), max_retries=2, sleep=waits.append, random=lambda: 0.0)
    with httpx.Client(transport=transport) as c:
        r = c.get("http://example.test/")
    assert r.status_code == 503 and r.text == "busy"
    assert waits == [0.5, 1.0]
    assert calls == ["GET", "GET", "GET"]
