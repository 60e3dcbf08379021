"""What the PostgreSQL store sends and reads back, without I/O: window specs, keys, replies.

A window travels as a spec string whose first number is the algorithm's code (the same
strings the Redis scripts read): ``"code limit P"``, ``"4 T tau burst"`` (gcra),
``"5 limit P burst full"`` (token-bucket), ``"7 limit p1 p2 p3 p4"`` (quota: the previous,
current and next period's starts and the next one's end, computed here in the policy's time
zone; the database picks the one holding its own clock). States are stored as text in the
Redis scripts' encoding; :func:`decode_state` turns one back into the core's value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ratewarden.core.algorithms import (
    GCRA,
    Concurrency,
    Quota,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
    Window,
)
from ratewarden.core.algorithms.base import Outcome
from ratewarden.errors import ConfigError, StoreError
from ratewarden.storage._specs import CODES, SpecCache

__all__ = ["CODES", "Specs", "db_key", "decode_state", "parse"]

#: PL/pgSQL computes in bigint: every product it forms must stay below this
EXACT = 2**62
_MAX_KEY = 512  # longer keys (and keys PostgreSQL text cannot hold) are stored as a digest


def db_key(prefix: str, key: str) -> str:
    """The ``key`` column of a limiter key: ``prefix + key``, or a digest of it when it is long,
    holds NUL or is not valid UTF-8 (PostgreSQL text cannot store those)."""
    k = prefix + key
    if len(k) <= _MAX_KEY and "\x00" not in k:
        if k.isascii():
            return k
        try:
            k.encode()
            return k
        except UnicodeEncodeError:
            pass
    return prefix + "#" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _spec(w: Window) -> str:
    code = CODES.get(w.name)
    if code is None:  # pragma: no cover - every core algorithm has a port
        raise ConfigError(f"the PostgreSQL store has no function for algorithm {w.name!r}")
    spec = f"{code} {w.limit} {w.period}"
    biggest = w.limit * w.period
    if isinstance(w, GCRA):
        spec = f"{code} {w.unit} {w.tau} {w.burst}"
        biggest = (w.tau + w.unit) * max(w.burst, 1)
    elif isinstance(w, TokenBucket):
        spec = f"{code} {w.limit} {w.period} {w.burst} {w.full}"
        biggest = (w.full + w.limit) * max(w.burst, 1)
    elif isinstance(w, SlidingWindow):
        biggest = (2 * w.limit + 1) * w.period * 2
    if biggest >= EXACT:
        raise ConfigError(
            f"{w.name} {w.rate} is too large for the PostgreSQL store's bigint arithmetic "
            "(limit x period must stay below 2^62 microseconds); use a smaller limit or a shorter period"
        )
    return spec


class Specs(SpecCache):
    """Spec strings, cached per window (a quota's per calendar period), checked for bigint."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_spec)


def parse(reply: Any, n: int) -> list[Outcome]:
    """The functions' flat reply (4 integers per item, maybe a sweep count after) -> Outcomes."""
    if not isinstance(reply, list) or len(reply) < 4 * n:
        raise StoreError(f"unexpected reply from the ratewarden functions: {reply!r:.200}")
    return [(reply[i] == 1, reply[i + 1], reply[i + 2], reply[i + 3], None) for i in range(0, 4 * n, 4)]


def decode_state(w: Window, raw: str | None) -> Any:
    """A stored state -> the value the Python core uses (for tests and inspection). A
    sliding-log's entries are rows of the log table: pass them as ``"ts cost ts cost ..."``."""
    if raw is None:
        return None
    parts: Sequence[str] = raw.split()
    if isinstance(w, GCRA):
        return int(parts[0])
    if isinstance(w, Concurrency):
        return tuple(
            (int(parts[i]), "" if parts[i + 1] == "-" else parts[i + 1], int(parts[i + 2]))
            for i in range(0, len(parts), 3)
        )
    nums = [int(x) for x in parts]
    if isinstance(w, Quota):
        return (nums[0], nums[1])  # "start used end": the end is the database's, not the core's
    if isinstance(w, SlidingLog):
        return tuple((nums[i], nums[i + 1]) for i in range(0, len(nums), 2))
    return tuple(nums)
