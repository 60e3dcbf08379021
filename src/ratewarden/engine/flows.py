"""The flows: generators that yield store calls, and the drivers that run them (sync, async).

The hot path: what applies to a (method, path, host, scheme) is worked out once and cached
(bounded), with each rule's store key prefix, header names and ``RateLimit-Policy`` value. A
request whose route has no bans and only plain throttle rules (no shadow, no tiers, no cost
charged after the response) skips the generator: :meth:`_begin` builds its items, one store
call, :meth:`_throttled` makes the verdict; the generator is made of the same pieces.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

from ratewarden.core.algorithms.base import ALLOWED, NEVER, NEW_STATE, REMAINING, RETRY_US, Outcome
from ratewarden.core.decision import deciding_index
from ratewarden.core.rates import US
from ratewarden.engine.contract import RequestFacts, Verdict
from ratewarden.engine.routes import _names, _Plan, _Route, _Routes, _Throttle
from ratewarden.engine.verdicts import Item, _Pending
from ratewarden.policy.keys import RequestContext, stored_key
from ratewarden.policy.model import Ban, Rule
from ratewarden.runner import Fallback, Runner
from ratewarden.storage.base import Store


@dataclass(slots=True)
class _Call:
    op: str  # hit | charge | reset
    items: list[Item]
    modes: list[str]  # on_store_error per item


@dataclass(slots=True)
class _Result:
    outs: list[Outcome]
    error: BaseException | None = None


_Flow = Generator[_Call, _Result, Any]


class _Flows(_Routes):
    """The flows and drivers of :class:`~ratewarden.engine.Engine`."""

    store: Store
    runner: Runner
    _inline: bool
    _has_lists: bool
    _oversize_deny: bool

    def _decide(self, facts: RequestFacts, op: str) -> Verdict:
        """The common case (no bans, no shadow or after-response rules on this route) is a
        straight call: :meth:`_begin`, one store call, :meth:`_throttled`; anything else runs the
        generator, which is built from the same pieces."""
        start = self._begin(facts, op)
        if isinstance(start, Verdict):
            return start
        ctx, route, t = start
        if t is None:
            result: Verdict = self._drive(self._check_flow(ctx, route, op))
            return result
        outs = self.runner.run(op, t.items, t.modes)  # type: ignore[arg-type]  # op: hit | peek
        return self._throttled(ctx, route, t, _Result(outs, outs.error if type(outs) is Fallback else None), op)

    async def _adecide(self, facts: RequestFacts, op: str) -> Verdict:
        start = self._begin(facts, op)
        if isinstance(start, Verdict):
            return start
        ctx, route, t = start
        if t is None:
            result: Verdict = await self._adrive(self._check_flow(ctx, route, op))
            return result
        runner = self.runner
        if self._inline:
            outs = runner.run(op, t.items, t.modes)  # type: ignore[arg-type]  # op: hit | peek
        else:
            outs = await runner.arun(op, t.items, t.modes)  # type: ignore[arg-type]
        return self._throttled(ctx, route, t, _Result(outs, outs.error if type(outs) is Fallback else None), op)

    def _begin(self, facts: RequestFacts, op: str) -> Verdict | tuple[RequestContext, _Route, _Throttle | None]:
        """Up to the store call: exempt paths and the lists decide here; on a fast route the
        throttle items are ready (else ``None``: the generator does the rest)."""
        ctx = RequestContext(facts, self.policy, self._clock)
        route = self._route(ctx)
        if route.exempt:
            return Verdict(True)
        if self._has_lists:
            listed = self._lists(ctx, op == "peek")
            if listed is not None:
                return listed
        if self._oversize_deny and ctx.oversize():
            for plan in route.plans:
                if plan.rule.on_oversize_body == "deny":
                    return self._too_large(ctx, plan.rule, op == "peek")
        if route.fast:
            t = self._fast(ctx, route, op)
            if t is None:
                t = self._throttle(ctx, route, op)
            if t.items and t.no_budget is None:
                return ctx, route, t
        return ctx, route, None

    def _key_flow(self, plan: _Plan, key: str, cost: int, attrs: Mapping[str, Any]) -> _Flow:
        r = plan.rule
        ctx = RequestContext(RequestFacts("", "", None, user=key, user_attrs=attrs), self.policy, self._clock)
        if r.tiers is None:
            wins, names = r.windows, plan.names
        else:
            wins = self._windows(r, ctx)
            names = _names(r.name, wins)
        if not wins:
            return self._deny(ctx, "throttle", self.policy.response.status, math.inf, r.name, [], limit=0, remaining=0)
        items = [(plan.prefix + key, w, cost) for w in wins]
        res = yield _Call("hit", items, [r.on_store_error] * len(items))
        if res.error is not None:
            self._emit("store_error", ctx, r.name, key, detail=repr(res.error))
        return self._verdict(ctx, [(r, key)] * len(items), names, res.outs, items, shadow=r.shadow)

    def _reset_flow(self, name: str, key: str) -> _Flow:
        p = self.policy
        key = stored_key(p.settings, key)  # "session=abc" as it is stored ("session=h:..."); see policy.keys
        items: list[Item] = []
        for r in p.rules:
            if r.name == name:
                wins = list(r.windows)
                if r.tiers is not None:
                    for tw in r.tiers.windows.values():
                        wins.extend(w for w in tw if w.id not in {x.id for x in wins})
                items.extend((f"r:{name}:{key}", w, 0) for w in wins)
        for b in p.bans:
            if b.name == name:
                items += [(f"b:{name}:{key}", b.ban, 0), (f"bc:{name}:{key}", b.counter, 0)]
        if not items:
            raise KeyError(f"no rule or ban named {name!r}")
        yield _Call("reset", items, [p.settings.on_store_error] * len(items))
        return None

    # -- drivers: the only sync/async difference ------------------------------------------------

    def _drive(self, flow: _Flow) -> Any:
        run = self.runner.run
        try:
            call = next(flow)
            while True:
                if call.op == "reset":
                    call = flow.send(self._run(call))
                    continue
                outs = run(call.op, call.items, call.modes)  # type: ignore[arg-type]  # op: hit|charge|peek
                call = flow.send(_Result(outs, outs.error if type(outs) is Fallback else None))
        except StopIteration as stop:
            return stop.value

    async def _adrive(self, flow: _Flow) -> Any:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._arun(call))
        except StopIteration as stop:
            return stop.value

    def _run(self, call: _Call) -> _Result:
        """One store call through the runner (each item under its rule's on_store_error)."""
        if call.op == "reset":
            return _Result([], self.runner.reset([(k, [w]) for k, w, _ in call.items]))
        outs = self.runner.run(call.op, call.items, call.modes)  # type: ignore[arg-type]  # op: hit|charge|peek
        return _Result(outs, outs.error if type(outs) is Fallback else None)

    async def _arun(self, call: _Call) -> _Result:
        if call.op == "reset":
            return _Result([], await self.runner.areset([(k, [w]) for k, w, _ in call.items]))
        outs = await self.runner.arun(call.op, call.items, call.modes)  # type: ignore[arg-type]
        return _Result(outs, outs.error if type(outs) is Fallback else None)

    def _check_flow(self, ctx: RequestContext, route: _Route, op: str) -> _Flow:
        """Every case (bans, shadow rules, after-response costs); :meth:`_begin` has handled the
        exempt paths and the lists."""
        s = self.policy.settings
        quiet = op == "peek"
        # bans that match this request (checked at cost 0 first), then the throttle rules
        items: list[Item] = []
        modes: list[str] = []
        bans: list[tuple[Ban, str]] = []
        ban_items: list[tuple[Ban, str]] = []
        for b in route.bans:
            k = ctx.key_or_fallback(b.key, b.fallback)
            if k is None:
                continue
            bans.append((b, k))
            if not b.shadow:
                items.append((f"b:{b.name}:{k}", b.ban, 0))
                modes.append(s.on_store_error)
                ban_items.append((b, k))
        n_bans = len(items)
        t = self._throttle(ctx, route, op)
        pending = _Pending([], bans, False, ctx) if bans or t.charges else None
        if t.no_budget is not None:
            r, k = t.no_budget
            if not quiet:
                self._emit("throttle", ctx, r.name, k, retry_after=math.inf, status=self.policy.response.status)
            v = self._deny(ctx, "throttle", self.policy.response.status, math.inf, r.name, [], limit=0, remaining=0)
            v.pending = pending
            return v
        res = _Result([])
        if n_bans or t.items:
            res = yield _Call(op, items + t.items, modes + t.modes)
            if res.error is not None and not quiet:
                self._emit("store_error", ctx, None, None, detail=repr(res.error))
        if t.shadow_items and not quiet:
            yield from self._shadow(ctx, t.shadow_items, t.shadow_owners)

        # a ban that holds refuses the request (nothing was consumed: all or nothing)
        for (b, k), o in zip(ban_items, res.outs, strict=False):
            if not o[ALLOWED]:
                if o[NEW_STATE] == "store_error":
                    return self._unavailable(ctx)
                retry = o[RETRY_US] / US
                if not quiet:
                    self._emit("banned", ctx, b.name, k, retry_after=retry, status=403)
                assert pending is not None  # a ban matched
                pending.banned = True
                v = self._deny(ctx, "ban", 403, retry, b.name, [])
                v.pending = pending
                return v
        # the store error (if any) is reported above, before the shadow rules' events
        return self._throttled(ctx, route, t, _Result(res.outs[n_bans:]), op, pending)

    def _throttled(
        self, ctx: RequestContext, route: _Route, t: _Throttle, res: _Result, op: str, pending: _Pending | None = None
    ) -> Verdict:
        """The verdict once the store answered for the throttle items of ``t``."""
        quiet = op == "peek"
        outs = res.outs
        if res.error is not None and not quiet:
            self._emit("store_error", ctx, None, None, detail=repr(res.error))
        owners = t.owners
        if t.keys is not None:  # the fast path
            for o in outs:
                if not o[ALLOWED]:  # a denial: who owns each item
                    owners = [(pl.rule, k) for pl, k in zip(route.plans, t.keys, strict=True) for _ in pl.rule.windows]
                    break
            else:
                if self._draft and route.policy is not None:
                    return self._admitted(route.parts, route.policy, route.rate_format, outs)
        return self._verdict(
            ctx,
            owners,
            t.names,
            outs,
            t.items,
            policy=route.policy if t.complete else None,
            rate_format=route.rate_format,
            quiet=quiet,
            pending=pending,
            charges=t.charges,
        )

    def _shadow(self, ctx: RequestContext, items: list[Item], owners: list[tuple[Rule, str]]) -> _Flow:
        """Shadow rules: their own all-or-nothing call; a would-be denial is an event, never a 429."""
        res = yield _Call("hit", items, [r.on_store_error for r, _ in owners])
        if res.error is not None:
            return None
        denied: dict[str, list[int]] = {}  # rule -> its denying items
        for i, ((r, _), o) in enumerate(zip(owners, res.outs, strict=True)):
            if not o[ALLOWED]:
                denied.setdefault(r.name, []).append(i)
        for name, idx in denied.items():
            i = idx[deciding_index([res.outs[j] for j in idx])]
            retry_us = res.outs[i][RETRY_US]
            retry = math.inf if retry_us == NEVER else retry_us / US
            self._emit("shadow", ctx, name, owners[i][1], retry_after=retry, status=self.policy.response.status)
        return None

    def _after_flow(self, pending: _Pending, verdict: Verdict, status: int, headers: Mapping[str, str]) -> _Flow:
        s = self.policy.settings
        if pending.charges and verdict.allowed:
            lower = {str(k).lower(): v for k, v in headers.items()}
            items: list[Item] = []
            modes: list[str] = []
            for r, k, wins in pending.charges:
                raw = lower.get(r.cost.header)
                try:
                    cost = int(str(raw).strip()) if raw is not None and len(str(raw)) < 20 else 1
                except ValueError:
                    cost = 1
                cost = max(0, cost)
                if cost:
                    for w in wins:
                        items.append((f"r:{r.name}:{k}", w, cost))
                        modes.append(r.on_store_error)
            if items:
                res = yield _Call("charge", items, modes)
                if res.error is not None:
                    self._emit("store_error", pending.ctx, None, None, detail=repr(res.error))
        if pending.banned:
            return None
        for b, k in pending.bans:
            if b.mode == "fail2ban" and status not in b.match.statuses:
                continue
            res = yield _Call("hit", [(f"bc:{b.name}:{k}", b.counter, 1)], [s.on_store_error])
            if res.error is not None:
                self._emit("store_error", pending.ctx, b.name, k, detail=repr(res.error))
                continue
            o = res.outs[0]
            if o[ALLOWED] and o[REMAINING] > 0:
                continue
            retry = b.ban_for_us / US
            if b.shadow:
                self._emit("shadow", pending.ctx, b.name, k, retry_after=retry, status=403, detail="ban")
                yield _Call("reset", [(f"bc:{b.name}:{k}", b.counter, 0)], [s.on_store_error])
                continue
            yield _Call("charge", [(f"b:{b.name}:{k}", b.ban, 1)], [s.on_store_error])
            yield _Call("reset", [(f"bc:{b.name}:{k}", b.counter, 0)], [s.on_store_error])
            self._emit("ban", pending.ctx, b.name, k, retry_after=retry, status=403)
        return None
