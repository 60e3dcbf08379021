"""Seconds -> microseconds, written once (``ratewarden.clock.to_micros``, re-exported by
core/rates.py): the nearest whole microsecond everywhere, never a truncation."""

from __future__ import annotations

import pytest

from ratewarden import clock as clock_module
from ratewarden.core import rates
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import parse_duration, parse_rate, to_micros
from ratewarden.storage.memory import MemoryStore
from ratewarden.storage.postgres import open_postgres
from ratewarden.storage.redis._lua import Codec

MIDNIGHT = 1_767_225_600  # 2026-01-01T00:00:00Z
#: 0.2 µs before midnight: ``int(t * 10**6)`` says 23:59:59.999999 of the old day, round() the new day
HAIR = 1767225599.9999998


@pytest.mark.parametrize(
    ("seconds", "us"),
    [
        (0, 0),
        (3, 3_000_000),
        (1.5, 1_500_000),
        (0.1, 100_000),
        (0.0000014, 1),
        (0.0000016, 2),
        (HAIR, MIDNIGHT * 10**6),
    ],
)
def test_to_micros_rounds_to_the_nearest_microsecond(seconds: float, us: int) -> None:
    assert to_micros(seconds) == us
    assert type(to_micros(seconds)) is int


def test_one_definition() -> None:
    assert rates.to_micros is clock_module.to_micros
    assert rates.US is clock_module.US
    assert parse_duration(0.0000016) == 2
    assert clock_module.micros(lambda: HAIR)() == MIDNIGHT * 10**6


def test_every_store_puts_the_same_instant_in_the_same_quota_period() -> None:
    """The Redis and PostgreSQL stores send the quota's calendar bounds from the client's clock;
    they truncated it, so 0.2 µs before midnight they sent the old day's bounds while the memory
    and SQLite stores (which round) were already in the new day."""
    w = make_window("quota", parse_rate("10/day"))
    memory = MemoryStore(clock=lambda: HAIR)
    assert memory.now() == MIDNIGHT * 10**6
    _, args = Codec("rw:", clock=lambda: HAIR).pack("hit", [("k", w, 1)])
    start = args[6].split()[3]  # "code limit prev start end next"
    assert int(start) == MIDNIGHT * 10**6, "the client's period must be the new day's"
    pg = open_postgres("postgresql://root@127.0.0.1:5432/test", clock=lambda: HAIR)  # connects on first use only
    assert pg._now() == (None, MIDNIGHT * 10**6)
    pg_test = open_postgres("postgresql://root@127.0.0.1:5432/test", _test_now=lambda: HAIR)
    assert pg_test._now() == (MIDNIGHT * 10**6, MIDNIGHT * 10**6)
