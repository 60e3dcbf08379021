"""Key values are stored as a keyed hash: a dump of the store (SQLite, Redis) or of the events
never shows a session id, an API key, a token subject or an e-mail address; servers sharing a
store derive the same stored key, with or without ``key_secret``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import jwt
import pytest
from rw_engine_helpers import MakeEngine, req

from ratewarden import FakeClock
from ratewarden.events import Event
from ratewarden.policy import PolicyError, loads_policy

JWT_SECRET = "a-long-hs256-secret-for-tests-only"
SESSION = "sess-7f3a9c1d2e4b"
API_KEY = "ak_live_51HfR2x"
SUB = "user-42-alice"
EMAIL = "alice@example.com"

POLICY = f"""
[ratewarden]
storage = "STORAGE"

[jwt]
algorithms = ["HS256"]
secret = "{JWT_SECRET}"

[[rule]]
name = "session"
match = {{ path = "/s" }}
key = "session"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "api"
match = {{ path = "/a" }}
key = "header:X-Api-Key"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "sub"
match = {{ path = "/j" }}
key = "jwt:sub"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "login"
match = {{ path = "/l" }}
key = "body:email"
limits = ["3/hour"]
algorithm = "fixed-window"

[[rule]]
name = "ip"
match = {{ path = "/i" }}
limits = ["3/hour"]
algorithm = "fixed-window"
"""


def _requests(clock: FakeClock) -> list[object]:
    token = jwt.encode({"sub": SUB, "exp": int(clock()) + 3600}, JWT_SECRET, algorithm="HS256")
    return [
        req("/s", headers={"cookie": f"session={SESSION}"}),
        req("/a", headers={"x-api-key": API_KEY}),
        req("/j", headers={"authorization": f"Bearer {token}"}),
        req("/l", method="POST", body=f'{{"email": "{EMAIL}"}}'.encode(), content_type="application/json"),
        req("/i", ip="198.51.100.77"),
    ]


SECRETS = (SESSION, API_KEY, SUB, EMAIL, "198.51.100.77")


def test_sqlite_rows_and_events_hold_no_secret(
    make: MakeEngine, clock: FakeClock, tmp_path: Path, events: list[Event]
) -> None:
    db = tmp_path / "rw.db"
    e = make(POLICY.replace("STORAGE", f"sqlite:///{db}"))
    for f in _requests(clock):
        for _ in range(4):
            e.check(f)  # type: ignore[arg-type]
    e.close()
    rows = [str(r[0]) for r in sqlite3.connect(db).execute("SELECT key FROM ratewarden_state")]
    assert len(rows) >= 5
    dump = "\n".join(rows) + "\n".join(str(ev.key) for ev in events)
    for secret in SECRETS:
        assert secret not in dump, secret
    from ratewarden.policy.keys import store_value

    assert any(k.endswith("session=" + store_value("session", SESSION, _default_secret())) for k in rows)
    assert len(events) == 5, "each rule still denied its fourth request"


def _default_secret() -> bytes:
    from ratewarden.policy.keys import _secret

    return _secret("", "rw:")


def test_redis_keys_hold_no_secret(make: MakeEngine, clock: FakeClock, redis_url: str, redis_prefix: str) -> None:
    import redis

    e = make(
        POLICY.replace("STORAGE", redis_url).replace("[ratewarden]", f'[ratewarden]\nkey_prefix = "{redis_prefix}"')
    )
    for f in _requests(clock):
        assert [e.check(f).allowed for _ in range(4)] == [True, True, True, False]  # type: ignore[arg-type]
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).scan_iter(match=redis_prefix + "*")]
    assert keys
    for secret in SECRETS:
        assert not any(secret in k for k in keys), secret


def test_servers_sharing_a_store_derive_the_same_key(clock: FakeClock, tmp_path: Path) -> None:
    """Two engines (two servers) on one SQLite file: one budget, without and with key_secret."""
    from ratewarden.engine import Engine

    db = tmp_path / "shared.db"
    for env in ({}, {"RATEWARDEN_KEY_SECRET": "a-shared-secret-of-the-deployment"}):
        a = Engine(POLICY.replace("STORAGE", f"sqlite:///{db}"), clock=clock, env=env)
        b = Engine(POLICY.replace("STORAGE", f"sqlite:///{db}"), clock=clock, env=env)
        f = _requests(clock)[1]
        got = [e.check(f).allowed for e in (a, b, a, b)]  # type: ignore[arg-type]
        assert got == [True, True, True, False]
        a.close()
        b.close()
        clock.advance(3600)


def test_key_secret_changes_the_stored_key(make: MakeEngine, events: list[Event]) -> None:
    plain = make(POLICY.replace("STORAGE", "memory://"))
    keyed = make(POLICY.replace("STORAGE", "memory://"), env={"RATEWARDEN_KEY_SECRET": "x" * 20})
    inline = make(
        POLICY.replace("STORAGE", "memory://").replace("[ratewarden]", '[ratewarden]\nkey_secret = "' + "x" * 20 + '"')
    )
    for e in (plain, keyed, inline):
        for _ in range(4):
            e.check(req("/a", headers={"x-api-key": API_KEY}))
    assert len(events) == 3
    assert events[0].key != events[1].key == events[2].key
    assert all(ev.key is not None and ev.key.startswith("header:x-api-key=h:") for ev in events)


def test_readable_keys_keep_ips_and_users_readable_when_asked(make: MakeEngine, events: list[Event]) -> None:
    e = make('[ratewarden]\nreadable_keys = ["ip"]\n[[rule]]\nname = "r"\nlimits = ["1/hour"]\n')
    e.check(req(ip="198.51.100.9"))
    e.check(req(ip="198.51.100.9"))
    assert events[-1].key == "ip=198.51.100.9"
    e.reset("r", "ip=198.51.100.9")
    assert e.check(req(ip="198.51.100.9")).allowed


def test_reset_takes_the_readable_key_of_a_hashed_value(make: MakeEngine, events: list[Event]) -> None:
    e = make(POLICY.replace("STORAGE", "memory://"))
    f = req("/s", headers={"cookie": f"session={SESSION}"})
    assert [e.check(f).allowed for _ in range(4)] == [True, True, True, False]
    e.reset("session", f"session={SESSION}")
    assert e.check(f).allowed
    assert [e.check(f).allowed for _ in range(3)] == [True, True, False]
    e.reset("session", str(events[-1].key))  # the key as the events show it
    assert e.check(f).allowed


def test_secrets_cannot_be_made_readable_and_a_short_key_secret_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"session.*always hashed"):
        loads_policy('[ratewarden]\nreadable_keys = ["session"]\n')
    with pytest.raises(PolicyError, match="key_secret"):
        loads_policy('[ratewarden]\nkey_secret = "short"\n')


def test_store_value_is_deterministic_and_keyed() -> None:
    from ratewarden.policy.keys import store_value

    assert store_value("ip", "1.2.3.4", b"k") == store_value("ip", "1.2.3.4", b"k")
    assert store_value("ip", "1.2.3.4", b"k") != store_value("ip", "1.2.3.4", b"j")
    assert len(store_value("ip", "1.2.3.4", b"k")) == 34


def test_reset_takes_a_header_key_in_any_letter_case(make: MakeEngine) -> None:
    e = make(POLICY.replace("STORAGE", "memory://"))
    f = req("/a", headers={"x-api-key": API_KEY})
    assert [e.check(f).allowed for _ in range(4)] == [True, True, True, False]
    e.reset("api", f"header:X-Api-Key={API_KEY}")
    assert e.check(f).allowed
