"""S2 through Django: the middleware configured by RATEWARDEN_POLICY, the @limit decorator,
request.user as the identity; the same policy file as the Flask app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scenario_django_app import configure

configure()

from django.test import Client, override_settings  # noqa: E402

from ratewarden import FakeClock  # noqa: E402


@pytest.fixture
def client(policies: Path, clock: FakeClock) -> Iterator[Client]:
    with override_settings(RATEWARDEN_POLICY=str(policies / "s2.toml"), RATEWARDEN_OPTIONS={"clock": clock}):
        yield Client(REMOTE_ADDR="198.51.100.7")


def test_sixth_registration_is_429_with_retry_after(client: Client, clock: FakeClock) -> None:
    statuses = [client.post("/auth/register").status_code for _ in range(5)]
    denied = client.post("/auth/register")
    assert statuses == [201] * 5
    assert denied.status_code == 429
    assert denied["Retry-After"] == "720"
    assert denied["Content-Type"] == "application/json"
    body: Any = denied.json()
    assert (body["error"], body["rule"], body["retry_after"], body["limit"]) == ("rate_limited", "register", 720, 5)
    assert denied["X-RateLimit-Remaining"] == "0"
    assert '"register";q=5;w=3600' in denied["RateLimit-Policy"]
    clock.advance(720)
    assert client.post("/auth/register").status_code == 201


def test_counters_are_shared_across_django_clients(client: Client) -> None:
    for _ in range(5):
        client.post("/auth/register")
    # Django builds a new middleware chain per test Client: the engine is shared all the same
    assert Client(REMOTE_ADDR="198.51.100.7").post("/auth/register").status_code == 429
    assert Client(REMOTE_ADDR="198.51.100.8").post("/auth/register").status_code == 201


def test_allowed_responses_carry_headers(client: Client) -> None:
    r = client.get("/profile")
    assert r.status_code == 200
    assert r["X-RateLimit-Limit"] == "50"
    assert r["X-RateLimit-Remaining"] == "49"
    assert '"defaults-3600s";r=49;t=72' in r["RateLimit"]


def test_spoofed_forwarded_for_is_ignored(client: Client) -> None:
    statuses = [client.post("/auth/login", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}").status_code for i in range(11)]
    assert statuses == [200] * 10 + [429]


def test_decorator_with_a_callable_key_on_the_body(client: Client, clock: FakeClock) -> None:
    for i in range(3):
        r = Client(REMOTE_ADDR=f"198.51.100.{i + 10}").post(
            "/auth/reset-password", data={"email": "a@example.com"}, content_type="application/json"
        )
        assert r.status_code == 200
        assert r.json() == {"sent": True, "echo": {"email": "a@example.com"}}
    denied = client.post("/auth/reset-password", data={"email": "a@example.com"}, content_type="application/json")
    assert denied.status_code == 429
    assert denied["Retry-After"] == "1200"
    assert denied.json()["rule"] == "scenario_django_app.reset_password"
    other = client.post("/auth/reset-password", data={"email": "b@example.com"}, content_type="application/json")
    assert other.status_code == 200


def test_decorator_keyed_by_request_user(client: Client) -> None:
    alice = {"HTTP_X_DEMO_USER": "1:WRITER"}
    assert [client.get("/export", **alice).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/export", HTTP_X_DEMO_USER="2:WRITER").status_code == 200  # same IP, other user
    anon = [Client(REMOTE_ADDR="198.51.100.50").get("/export").status_code for _ in range(3)]
    assert anon == [200, 200, 429]  # anonymous: the rule falls back to the client IP (the default fallback)


def test_without_a_policy_the_middleware_passes_through(clock: FakeClock) -> None:
    with override_settings(RATEWARDEN_POLICY=None, RATEWARDEN_OPTIONS={"clock": clock}):
        c = Client(REMOTE_ADDR="198.51.100.7")
        assert [c.post("/auth/register").status_code for _ in range(7)] == [201] * 7
