"""The framework-free header fields and denial bodies."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from ratewarden.http import PolicyState, denial_body, rate_limit_headers, retry_after_seconds
from ratewarden.policy.model import ResponseConfig

A = PolicyState("login", 5, 1200, 4, 1200)
B = PolicyState("api", 300, 300, 0, 12.2, allowed=False, retry_after=1.5)


def test_draft_10_fields_list_every_policy() -> None:
    assert rate_limit_headers("draft", [A, B]) == [
        ("RateLimit-Policy", '"login";q=5;w=1200, "api";q=300;w=300'),
        ("RateLimit", '"login";r=4;t=1200, "api";r=0;t=13'),
    ]


def test_legacy_shows_the_most_restrictive_window() -> None:
    assert rate_limit_headers("legacy", [A, B]) == [
        ("X-RateLimit-Limit", "300"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "13"),
    ]
    c = PolicyState("c", 10, 60, 2, 30)
    assert rate_limit_headers("legacy", [A, c], now=1000.5, legacy_reset="epoch")[1:] == [
        ("X-RateLimit-Remaining", "2"),
        ("X-RateLimit-Reset", "1031"),
    ]
    assert rate_limit_headers("none", [A]) == [] and rate_limit_headers("draft", []) == []


@given(st.floats(min_value=1e-6, max_value=1e9))
def test_retry_after_is_ceil_and_never_zero(x: float) -> None:
    n = retry_after_seconds(x)
    assert n is not None and n >= 1 and n >= x and n - x < 1 + 1e-9


def test_retry_after_infinite_is_none() -> None:
    assert retry_after_seconds(math.inf) is None and retry_after_seconds(0.0) == 1


def test_default_body_matches_design_section_7() -> None:
    body = json.loads(
        denial_body(
            ResponseConfig(), "throttle", retry_after=16.2, rule="login", limit=5, remaining=0, reset_after=16.2, now=0
        )
    )
    assert body == {
        "error": "rate_limited",
        "message": "Too many requests; retry in 17 seconds.",
        "retry_after": 17,
        "rule": "login",
        "limit": 5,
        "remaining": 0,
        "reset": "1970-01-01T00:00:17Z",
    }


def test_custom_shape_and_kinds() -> None:
    cfg = ResponseConfig(body={"code": "code", "wait": "retry_after_exact", "in": "reset_after"}, ban_code="BANNED")
    assert json.loads(denial_body(cfg, "ban", retry_after=2.5, rule="b", reset_after=None)) == {
        "code": "BANNED",
        "wait": 2.5,
        "in": 3,
    }
    assert json.loads(denial_body(cfg, "throttle", retry_after=math.inf, rule="x")) == {
        "code": "rate_limited",
        "wait": None,
        "in": None,
    }


def test_reset_time_float_error_does_not_push_midnight_to_the_next_second() -> None:
    from ratewarden.http.responses import iso_time

    midnight = 1_798_761_600  # 2027-01-01T00:00:00Z
    now = 1_798_761_600 - 3600 * 7 + 0.1  # a clock reading with a fraction
    reset_after = midnight - now  # what the engine computes: float error either way
    for error in (0.0, 2e-7, -2e-7, 9e-4, -9e-4):
        assert iso_time(now + reset_after + error) == "2027-01-01T00:00:00Z"
    assert iso_time(midnight + 0.002) == "2027-01-01T00:00:01Z", "more than a millisecond still rounds up"
    assert iso_time(midnight - 0.002) == "2027-01-01T00:00:00Z"
    body = json.loads(
        denial_body(ResponseConfig(), "throttle", retry_after=5, rule="q", reset_after=1e-9, now=midnight)
    )
    assert body["reset"] == "2027-01-01T00:00:00Z"


def test_legacy_epoch_reset_has_the_same_rounding() -> None:
    midnight = 1_798_761_600
    now = midnight - 25_200 + 0.1
    state = PolicyState("q", 10, 86400, 3, (midnight - now) + 2e-7)
    assert rate_limit_headers("legacy", [state], now=now, legacy_reset="epoch")[2] == (
        "X-RateLimit-Reset",
        str(midnight),
    )
