"""The pure operations every store applies atomically to the states of one key's windows.

``run(op, windows, states, now, costs, arg) -> (outcomes, new_states)``: one state and one
cost per window (the windows may belong to different keys and rules); ``new_states`` is
``None`` when nothing must be written. This is where the contract invariants live:

1. **All or nothing** (``hit``/``acquire``): a request is admitted by every window or by none,
   and a denial writes nothing, so denials are free and ``retry_after`` is exact.
2. ``peek`` never writes. ``charge`` always writes (a cost known after the work is done).
3. ``release`` drops one concurrency lease and leaves other windows as they were.

Stores (memory, SQLite) call this under their lock or transaction; the Redis Lua scripts are
ports of the same function, proven equal by differential tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from ratewarden.core.algorithms.base import ALLOWED, NEW_STATE, REMAINING, RESET_US, Outcome, Window
from ratewarden.core.algorithms.concurrency import Concurrency

__all__ = ["Op", "run"]

Op = Literal["hit", "peek", "charge", "acquire", "release"]


def run(
    op: Op, windows: Sequence[Window], states: Sequence[Any], now: int, costs: Sequence[int], arg: str = ""
) -> tuple[list[Outcome], list[Any] | None]:
    if op in {"hit", "peek"}:
        outs = [w.decide(s, now, c) for w, s, c in zip(windows, states, costs, strict=True)]
        if op == "peek" or not all(o[ALLOWED] for o in outs):
            return outs, None
        return outs, [o[NEW_STATE] for o in outs]
    if op == "acquire":
        outs = [
            w.acquire(s, now, c, arg) if isinstance(w, Concurrency) else w.decide(s, now, c)
            for w, s, c in zip(windows, states, costs, strict=True)
        ]
        if not all(o[ALLOWED] for o in outs):
            return outs, None
        return outs, [o[NEW_STATE] for o in outs]
    if op == "charge":
        new = [w.charge(s, now, c) for w, s, c in zip(windows, states, costs, strict=True)]
        outs = []
        for w, n in zip(windows, new, strict=True):
            o = w.decide(n, now, 0)
            outs.append((True, o[REMAINING], o[RESET_US], 0, n))
        return outs, new
    if op == "release":
        new = []
        outs = []
        for w, old in zip(windows, states, strict=True):
            s = w.release(old, now, arg)[1] if isinstance(w, Concurrency) else old
            o = w.decide(s, now, 0)
            outs.append((True, o[REMAINING], o[RESET_US], 0, s))
            new.append(s)
        return outs, new
    raise ValueError(f"unknown operation {op!r}")
