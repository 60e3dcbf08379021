"""Decisions the service gives: JSON shapes of a verdict, and several (rule, key, cost) at once.

:func:`decide_many` is what an Envoy request with several descriptors needs: every matched
rule's windows in ONE store call, so the request is admitted by all of them or consumes nothing
in any (the same all-or-nothing call the engine makes for one HTTP request). :func:`status`
reads windows without consuming (the store's ``peek``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ratewarden.core.algorithms.base import ALLOWED, NEVER, REMAINING, RESET_US, Outcome, Window
from ratewarden.core.decision import deciding_index
from ratewarden.core.evaluate import Op
from ratewarden.core.rates import US
from ratewarden.engine import Engine, Verdict
from ratewarden.http.headers import most_restrictive
from ratewarden.policy.model import Rule
from ratewarden.runner import failure

__all__ = ["Granted", "decide_many", "key_json", "request_json", "status", "windows_of"]


_INF = math.inf


def _num(x: float) -> float | None:
    """JSON has no infinity: a wait that never ends is ``null``."""
    return None if x == _INF or math.isnan(x) else round(x, 6)


def _window_json(st: Any) -> dict[str, Any]:
    return {
        "name": st.name,
        "limit": st.limit,
        "window": st.window,
        "remaining": max(0, st.remaining),
        "reset_after": _num(st.reset_after),
        "allowed": st.allowed,
        "retry_after": _num(st.retry_after),
    }


def _headers(v: Verdict) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, val in v.headers:
        out[k] = val if k not in out else out[k] + ", " + val
    return out


def key_json(v: Verdict, rule: str) -> dict[str, Any]:
    """``{"allowed", "limit", "remaining", "reset_after", "retry_after", "rule", "headers", "decisions"}``:
    the top-level numbers are the deciding window's (on a denial the one with the longest wait,
    else the one with the fewest units left)."""
    states = v.decisions
    deciding = most_restrictive(states) if states else None
    return {
        "allowed": v.allowed,
        "limit": deciding.limit if deciding else 0,
        "remaining": max(0, deciding.remaining) if deciding else 0,
        "reset_after": _num(deciding.reset_after) if deciding else 0.0,
        "retry_after": _num(v.retry_after),
        "rule": rule,
        "status": v.status,
        "headers": _headers(v),
        "decisions": [_window_json(s) for s in states],
    }


def request_json(v: Verdict) -> dict[str, Any]:
    """``{"allowed", "status", "headers", "body", "retry_after", "rule"}``: what the middleware
    would answer (``body`` is the denial's JSON body, null when admitted)."""
    body: Any = None
    if v.body is not None:
        try:
            body = json.loads(v.body)
        except ValueError:  # pragma: no cover - the engine writes JSON
            body = v.body.decode("utf-8", "replace")
    return {
        "allowed": v.allowed,
        "status": v.status,
        "headers": _headers(v),
        "body": body,
        "retry_after": _num(v.retry_after),
        "rule": v.rule,
        "decisions": [_window_json(s) for s in v.decisions],
    }


def windows_of(rule: Rule) -> tuple[Window, ...]:
    """The windows a key-only check uses: the rule's, or its default tier's."""
    t = rule.tiers
    if t is not None and t.default is not None:
        return t.windows[t.default]
    return rule.windows


@dataclass(frozen=True, slots=True)
class Granted:
    """One rule's part of a several-rule decision."""

    allowed: bool
    limit: int  # of the deciding window
    remaining: int
    reset_after: float  # seconds
    retry_after: float  # seconds; inf when it never passes
    period: float  # seconds of the deciding window
    store_error: bool = False


def _fold(wins: Sequence[Window], outs: Sequence[Outcome]) -> Granted:
    i = deciding_index(outs)
    w = wins[i]
    allowed, remaining, reset_us, retry_us, new_state = outs[i]
    retry = 0.0 if allowed else (math.inf if retry_us == NEVER else retry_us / US)
    return Granted(allowed, w.limit, max(0, remaining), reset_us / US, retry, w.period / US, new_state == "store_error")


async def decide_many(
    engine: Engine, asks: Sequence[tuple[Rule, str, int]], op: Op = "hit"
) -> tuple[list[Granted], BaseException | None]:
    """Decide every ``(rule, key, cost)`` together, all or nothing, in one store call. Shadow
    rules are decided in a second call of their own and never deny. When one rule denies, the
    others' remaining units are what they would be had nothing been consumed."""
    strict = [(i, a) for i, a in enumerate(asks) if not a[0].shadow]
    shadow = [(i, a) for i, a in enumerate(asks) if a[0].shadow]
    result: list[Granted | None] = [None] * len(asks)
    error: BaseException | None = None
    for group in (strict, shadow):
        if not group:
            continue
        items: list[tuple[str, Window, int]] = []
        modes: list[str] = []
        spans: list[tuple[int, int]] = []
        for _, (rule, key, cost) in group:
            start = len(items)
            for w in windows_of(rule):
                items.append((f"r:{rule.name}:{key}", w, cost))
                modes.append(rule.on_store_error)
            spans.append((start, len(items)))
        runner = engine.runner
        got = runner.run(op, items, modes) if runner.inline else await runner.arun(op, items, modes)
        error = error or failure(got)
        admitted = all(o[ALLOWED] for o in got)
        for (i, (_, _, cost)), (a, b) in zip(group, spans, strict=True):
            outs = got[a:b]
            if not admitted and op == "hit" and cost:  # nothing was consumed: the admitted windows keep their units
                outs = [
                    o if not o[ALLOWED] else (True, min(w.limit, o[REMAINING] + cost), *o[RESET_US:])
                    for o, (_, w, _) in zip(outs, items[a:b], strict=True)
                ]
            g = _fold([it[1] for it in items[a:b]], outs)
            result[i] = g
    return [g for g in result if g is not None], error


async def status(engine: Engine, rule: Rule, key: str) -> list[dict[str, Any]]:
    """Every window of ``rule`` for ``key`` as it is now (nothing consumed)."""
    wins = windows_of(rule)
    items = [(f"r:{rule.name}:{key}", w, 0) for w in wins]
    runner, modes = engine.runner, [rule.on_store_error] * len(items)
    got = runner.run("peek", items, modes) if runner.inline else await runner.arun("peek", items, modes)
    out = []
    for w, o in zip(wins, got, strict=True):
        out.append(
            {
                "limit": w.limit,
                "window": w.period / US,
                "remaining": max(0, o[REMAINING]),
                "reset_after": round(o[RESET_US] / US, 6),
                "available": bool(o[ALLOWED]),
            }
        )
    return out
