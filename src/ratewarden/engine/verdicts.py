"""Verdicts: their headers and bodies, denials, and the events they emit."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ratewarden.core.algorithms.base import ALLOWED, NEVER, REMAINING, RESET_US, Outcome, Window
from ratewarden.core.decision import deciding_index, retry_after_seconds
from ratewarden.core.rates import US
from ratewarden.engine.contract import RequestFacts, Verdict
from ratewarden.events import Event, EventBus, EventKind
from ratewarden.http.headers import PolicyState, rate_limit_headers
from ratewarden.http.responses import DenialKind, denial_body
from ratewarden.policy.keys import RequestContext
from ratewarden.policy.model import Ban, Policy, Rule

log = logging.getLogger("ratewarden")

Item = tuple[str, Window, int]


@dataclass(slots=True)
class _Pending:
    charges: list[tuple[Rule, str, tuple[Window, ...]]]
    bans: list[tuple[Ban, str]]
    banned: bool
    ctx: RequestContext


_new_tuple: Any = tuple.__new__  # PolicyState(...) without its Python-level __new__ (a third of the cost)


class _Verdicts:
    """The verdict-making part of :class:`~ratewarden.engine.Engine`."""

    policy: Policy
    events: EventBus
    _clock: Callable[[], float]
    _draft: bool

    def _admitted(
        self, parts: Sequence[tuple[str, int, float]], policy: str, rate_format: str, outs: Sequence[Outcome]
    ) -> Verdict:
        """The verdict of the fast path when every window admitted under ``headers = "draft"``:
        :meth:`_verdict`'s admitted branch with each state's name, limit and window from ``parts``
        (the route's, in item order; the differential tests in tests/engine/test_fast_path.py hold them equal).
        With the three rules of bench/http/policy.toml, ``Engine.check`` went from about
        97,700 to about 80,000 instructions per request (callgrind, bench/http_cost.py's method)."""
        new = _new_tuple
        states: list[PolicyState] = []
        numbers: list[int] = []
        # aligned (one outcome per item); a strict= keyword would cost a dict per call
        for (name, limit, secs), o in zip(parts, outs):  # noqa: B905
            left = o[REMAINING]
            full = o[RESET_US]
            states.append(new(PolicyState, (name, limit, secs, left, full / US, True, 0.0)))
            numbers.append(left if left > 0 else 0)
            numbers.append(-(-full // US) if full > 0 else 0)
        headers = [("RateLimit-Policy", policy), ("RateLimit", rate_format % tuple(numbers))]
        return Verdict(True, 200, headers, None, "application/json", 0.0, None, states, None)

    def _verdict(
        self,
        ctx: RequestContext,
        owners: Sequence[tuple[Rule, str]],
        names: Sequence[str],
        outs: Sequence[Outcome],
        items: Sequence[Item],
        *,
        policy: str | None = None,
        rate_format: str = "",
        quiet: bool = False,
        shadow: bool = False,
        pending: _Pending | None = None,
        charges: list[tuple[Rule, str, tuple[Window, ...]]] | None = None,
    ) -> Verdict:
        """The verdict for the throttle windows' outcomes (``owners``/``names``/``outs``/``items``
        aligned); ``policy``: the ``RateLimit-Policy`` value if known already, and then
        ``rate_format``: the ``RateLimit`` value's %-format (two integers per item)."""
        admitted = True
        for o in outs:
            if not o[ALLOWED]:
                admitted = False
                break
        if admitted:  # the common case: every window admits
            new = _new_tuple
            states: list[PolicyState] = []
            numbers: list[int] = []  # remaining and whole seconds to full, per window
            for name, o, it in zip(names, outs, items, strict=True):
                w = it[1]
                left = o[REMAINING]
                full = o[RESET_US]
                states.append(new(PolicyState, (name, w.limit, w.period / US, left, full / US, True, 0.0)))
                numbers.append(left if left > 0 else 0)
                numbers.append(-(-full // US) if full > 0 else 0)
            if policy is not None and self._draft:  # draft fields straight from the outcomes' integers
                headers = [("RateLimit-Policy", policy), ("RateLimit", rate_format % tuple(numbers))]
            else:
                headers = self._headers(states, policy)
            if pending is not None and charges:
                pending.charges = charges
            return Verdict(True, 200, headers, None, "application/json", 0.0, None, states, pending)
        states = []
        store_denied = False
        for name, o, item in zip(names, outs, items, strict=True):
            w = item[1]
            ok, remaining, reset_us, retry_us, new_state = o
            if ok and item[2]:
                remaining = min(w.limit, remaining + item[2])  # it was not consumed after all
            retry = 0.0 if ok else (math.inf if retry_us == NEVER else retry_us / US)
            states.append(PolicyState(name, w.limit, w.period / US, remaining, reset_us / US, ok, retry))
            store_denied = store_denied or (not ok and new_state == "store_error")
        headers = self._headers(states, policy)
        i = deciding_index(outs)  # a window denies here, so the denying one with the longest wait
        r, k = owners[i]
        st = states[i]
        status = self.policy.response.status
        if shadow:
            self._emit("shadow", ctx, r.name, k, retry_after=st.retry_after, status=status)
            return Verdict(True, 200, headers, None, decisions=states, pending=pending)
        if store_denied:
            v = self._unavailable(ctx)
            v.pending = pending
            return v
        if not quiet:
            self._emit("throttle", ctx, r.name, k, retry_after=st.retry_after, status=status)
        v = self._deny(
            ctx,
            "throttle",
            status,
            st.retry_after,
            r.name,
            headers,
            limit=st.limit,
            remaining=st.remaining,
            reset_after=st.reset_after,
        )
        v.decisions = states
        v.pending = pending
        return v

    def _headers(self, states: list[PolicyState], policy: str | None) -> list[tuple[str, str]]:
        s = self.policy.settings
        mode = s.headers
        if mode == "draft":
            return rate_limit_headers(mode, states, policy=policy)
        now = self._clock() if s.legacy_reset == "epoch" else 0.0
        return rate_limit_headers(mode, states, now=now, legacy_reset=s.legacy_reset, policy=policy)

    def _deny(
        self,
        ctx: RequestContext,
        kind: DenialKind,
        status: int,
        retry: float,
        rule: str | None,
        headers: list[tuple[str, str]],
        *,
        limit: int | None = None,
        remaining: int | None = None,
        reset_after: float | None = None,
    ) -> Verdict:
        whole = retry_after_seconds(retry)
        hs = list(headers)
        if whole is not None:
            hs.append(("Retry-After", str(whole)))
        body = denial_body(
            self.policy.response,
            kind,
            retry_after=retry,
            rule=rule,
            limit=limit,
            remaining=remaining,
            reset_after=reset_after,
            now=self._clock(),
        )
        return Verdict(False, status, hs, body, retry_after=retry, rule=rule)

    def _too_large(self, ctx: RequestContext, rule: Rule, quiet: bool) -> Verdict:
        """413 for a body over ``body_limit`` under ``on_oversize_body = "deny"``: the key cannot
        be read, and no wait helps (no Retry-After), so the client must send a smaller body."""
        if not quiet:
            self._emit("throttle", ctx, rule.name, None, status=413, detail="body over body_limit")
        v = self._deny(ctx, "too_large", 413, math.inf, rule.name, [], limit=self.policy.settings.body_limit)
        v.retry_after = 0.0
        return v

    def _unavailable(self, ctx: RequestContext) -> Verdict:
        s = self.policy.settings
        retry = s.store_error_retry_after
        return self._deny(ctx, "unavailable", s.store_error_status, retry, None, [])

    def _internal_error(self, facts: RequestFacts, exc: BaseException) -> Verdict:
        log.exception("ratewarden: internal error while checking a request; on_store_error decides")
        with contextlib.suppress(Exception):
            self.events.emit(
                Event("error", None, None, facts.client_ip, str(facts.method), str(facts.path), None, detail=repr(exc))
            )
        if self.policy.settings.on_store_error == "deny":
            s = self.policy.settings
            return Verdict(False, s.store_error_status, [("Retry-After", "1")], b'{"error": "unavailable"}')
        return Verdict(True)

    def _emit(
        self,
        kind: EventKind,
        ctx: RequestContext,
        rule: str | None,
        key: str | None,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        f = ctx.facts
        self.events.emit(
            Event(
                kind,
                rule,
                key,
                ctx.client_ip,
                ctx.method,
                ctx.path,
                f.user if isinstance(f.user, str) else (None if f.user is None else str(f.user)),
                None if retry_after is None or math.isinf(retry_after) else retry_after,
                status,
                detail,
            )
        )
