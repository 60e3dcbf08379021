"""Routes: which rules and bans apply to a request (cached per route), and their store items."""

from __future__ import annotations

import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ratewarden.core.algorithms.base import Window
from ratewarden.core.rates import US
from ratewarden.engine.contract import RequestFacts, Verdict
from ratewarden.engine.verdicts import Item, _Verdicts
from ratewarden.http.headers import PolicyState, policy_field
from ratewarden.policy.keys import RequestContext
from ratewarden.policy.match import exempt_path, matches, normalize_path, path_matches, route_path
from ratewarden.policy.model import Ban, Rule


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the request path needs of a rule, computed once."""

    rule: Rule
    prefix: str  # store key prefix of the rule
    names: tuple[str, ...]  # header policy names of its base windows
    ip_key: bool  # key is plain "ip" (the fast path)
    cost: int | None  # the constant cost, None when it comes from a header
    simple: bool  # no tiers, a cost known before the response, not shadow: items straight from the plan
    #: the header a key of one ``header:NAME`` part reads: when the request lacks it, the key is
    #: missing without building it (the fast path goes straight to the fallback)
    probe: str | None = None
    fallback_ip: bool = False  # the fallback is plain "ip"

    @classmethod
    def of(cls, r: Rule) -> _Plan:
        constant = r.cost.source == "constant"
        parts = r.key.parts
        return cls(
            r,
            f"r:{r.name}:",
            _names(r.name, r.windows),
            r.key.text == "ip",
            r.cost.value if constant else None,
            constant and r.tiers is None and not r.shadow,
            parts[0].name if len(parts) == 1 and parts[0].kind == "header" else None,
            r.fallback is not None and r.fallback.text == "ip",
        )


@dataclass(frozen=True, slots=True)
class _Route:
    """What applies to one (method, path, host, scheme): computed once per route, then cached."""

    exempt: bool  # a [ratewarden] exempt path: never counted
    plans: tuple[_Plan, ...]  # the rules that apply, in policy order
    bans: tuple[Ban, ...]  # the bans that apply
    fast: bool  # no bans and every plan simple: one store call, no generator needed
    policy: str | None  # the ``RateLimit-Policy`` value when every plan gives its base windows
    rate_format: str  # then the ``RateLimit`` value as a %-format: ``"NAME";r=%d;t=%d`` per throttle item
    #: on a fast route, per throttle item in order when every plan has its key: the header
    #: policy name, the ``on_store_error`` mode, and ``(name, limit, window seconds)`` of its state
    names: list[str] = field(default_factory=list)  # never changed once made
    modes: list[str] = field(default_factory=list)
    parts: tuple[tuple[str, int, float], ...] = ()


class _Throttle:
    """The throttle rules' part of one request: store items and who owns each (aligned lists)."""

    __slots__ = (
        "charges",
        "complete",
        "items",
        "keys",
        "modes",
        "names",
        "no_budget",
        "owners",
        "shadow_items",
        "shadow_owners",
    )

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.modes: list[str] = []
        self.owners: list[tuple[Rule, str]] = []  # (rule, key) per item
        self.names: list[str] = []  # header policy name per item
        #: the fast path (:meth:`Engine._fast`): each plan's key, in route order; ``owners`` is
        #: then left empty and made from these only for a denial
        self.keys: list[str] | None = None
        self.shadow_items: list[Item] = []
        self.shadow_owners: list[tuple[Rule, str]] = []
        self.charges: list[tuple[Rule, str, tuple[Window, ...]]] = []
        self.no_budget: tuple[Rule, str] | None = None
        self.complete = True  # every plan of the route gave its base windows (the cached policy header holds)


def _names(name: str, windows: Sequence[Window]) -> tuple[str, ...]:
    """Header policy names: the rule's name for one window, ``NAME-<seconds>s`` for each of several."""
    if len(windows) == 1:
        return (name,)
    return tuple(f"{name}-{_secs(w)}s" for w in windows)


def _secs(w: Window) -> str:
    return f"{w.period / US:g}"


#: routes remembered per engine; past this many distinct (method, path, host, scheme) the cache
#: starts again (so a flood of distinct paths costs a re-match each, never unbounded memory)
ROUTE_CACHE_SIZE = 4096
ROUTE_KEY_MAX = 512  # characters of path and host: at most ~2 MiB of cached keys per engine


class _Routes(_Verdicts):
    """Rule matching and the bounded route cache of :class:`~ratewarden.engine.Engine`."""

    _needs_body: bool
    _plans: list[_Plan]
    _routes: dict[tuple[str, str, str, str], _Route]
    _by_host: bool
    _by_scheme: bool

    # -- cheap questions ------------------------------------------------------------------------

    def exempt(self, facts: RequestFacts) -> bool:
        ex = self.policy.settings.exempt
        if not ex:
            return False
        try:
            path = route_path(facts.path or "/")
            return exempt_path(ex, path, normalize_path(path))
        except Exception:  # pragma: no cover - defensive: never raise on client input
            return False

    def needs_body(self, facts: RequestFacts) -> bool:
        if not self._needs_body:
            return False
        try:
            ctx = RequestContext(facts, self.policy, self._clock)
            for r in self.policy.rules:
                if (r.key.needs_body or (r.fallback is not None and r.fallback.needs_body)) and self._applies(r, ctx):
                    return True
            return any(b.key.needs_body and self._matches(b.match, ctx) for b in self.policy.bans)
        except Exception:  # pragma: no cover - defensive
            return False

    # -- the logic, written once ----------------------------------------------------------------

    def _matches(self, match: Any, ctx: RequestContext) -> bool:
        return matches(match, ctx.method, ctx.path, ctx.host if match.hosts else "", ctx.facts.scheme, ctx.norm_path)

    def _applies(self, rule: Rule, ctx: RequestContext) -> bool:
        return self._matches(rule.match, ctx) and not (
            rule.exempt and exempt_path(rule.exempt, ctx.path, ctx.norm_path)
        )

    def _windows(self, rule: Rule, ctx: RequestContext) -> tuple[Window, ...]:
        t = rule.tiers
        if t is None:
            return rule.windows
        v = ctx.attr(t.attr)
        if v is not None and v in t.windows:
            return t.windows[v]
        if t.default is not None:
            return t.windows[t.default]
        return rule.windows

    def _cost(self, rule: Rule, ctx: RequestContext) -> int:
        c = rule.cost
        if c.source == "constant":
            return c.value
        if c.source == "response_header":
            return 0  # check only: admitted while one unit remains; charged in after()
        raw = ctx.header(c.header)
        try:
            n = int(raw.strip()) if raw is not None and len(raw) < 20 else 1
        except ValueError:
            n = 1
        return max(1, n)  # a client cannot send cost 0 to pass for free

    def _safelisted(self, ctx: RequestContext) -> bool:
        sl = self.policy.safelist
        if sl.paths and exempt_path(sl.paths, ctx.path, ctx.norm_path):
            return True
        if sl.secret_header:
            given = ctx.header(sl.secret_header)
            if given is not None and hmac.compare_digest(
                given.encode("utf-8", "surrogateescape"), sl.secret.encode("utf-8", "surrogateescape")
            ):
                return True
        if sl.networks:
            ip = ctx.ip
            if ip is not None and any(ip.version == n.version and ip in n for n in sl.networks):
                return True
        return False

    def _blocklisted(self, ctx: RequestContext) -> bool:
        bl = self.policy.blocklist
        if bl.paths and (path_matches(bl.paths, ctx.path) or path_matches(bl.paths, ctx.norm_path)):
            return True
        if bl.networks:
            ip = ctx.ip
            if ip is not None and any(ip.version == n.version and ip in n for n in bl.networks):
                return True
        return False

    def _route(self, ctx: RequestContext) -> _Route:
        """The rules and bans that apply to this request's method, path, host and scheme (cached)."""
        rk = (ctx.method, ctx.path, ctx.host if self._by_host else "", ctx.facts.scheme if self._by_scheme else "")
        route = self._routes.get(rk)
        if route is not None:
            return route
        p = self.policy
        s = p.settings
        exempt = bool(s.exempt) and exempt_path(s.exempt, ctx.path, ctx.norm_path)
        plans = tuple(pl for pl in self._plans if self._applies(pl.rule, ctx))
        bans = tuple(b for b in p.bans if self._matches(b.match, ctx))
        policy = None
        rate_format = ""
        if all(pl.rule.tiers is None for pl in plans):
            states = [
                PolicyState(name, w.limit, w.period / US, 0, 0.0)
                for pl in plans
                if not pl.rule.shadow
                for name, w in zip(pl.names, pl.rule.windows, strict=True)
            ]
            policy = policy_field(states) if states else None
            rate_format = ", ".join([f'"{st.name}";r=%d;t=%d' for st in states])  # names never hold '%'
        fast = not bans and all(pl.simple for pl in plans)
        names: list[str] = []
        modes: list[str] = []
        parts: tuple[tuple[str, int, float], ...] = ()
        if fast:
            each = [
                (n, w, pl.rule.on_store_error) for pl in plans for n, w in zip(pl.names, pl.rule.windows, strict=True)
            ]
            names = [n for n, _, _ in each]
            modes = [m for _, _, m in each]
            parts = tuple((n, w.limit, w.period / US) for n, w, _ in each)
        route = _Route(exempt, plans, bans, fast, policy, rate_format, names, modes, parts)
        if len(ctx.path) + len(rk[2]) <= ROUTE_KEY_MAX:  # a huge path is matched each time, never kept
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[rk] = route
        return route

    def _lists(self, ctx: RequestContext, quiet: bool) -> Verdict | None:
        """The safelist admits, the blocklist refuses (403); None when neither applies."""
        if self._safelisted(ctx):
            return Verdict(True)
        if self._blocklisted(ctx):
            if not quiet:
                self._emit("block", ctx, None, None, status=403)
            v = self._deny(ctx, "block", 403, math.inf, None, [])
            v.retry_after = 0.0  # no wait will help: no Retry-After, body retry_after null
            return v
        return None

    #: the ``"ip"`` key of a socket peer's text, when no proxy is trusted (then it depends on the
    #: peer alone): one dictionary look-up instead of :meth:`RequestContext.ip_key`'s three
    #: cached calls; bounded like the route cache (per engine: made on the first miss)
    _peer_keys: dict[str | None, str] = {}  # noqa: RUF012  # the shared empty default, never filled

    def _ip_key(self, ctx: RequestContext) -> str:
        k = ctx.ip_key()
        if not self.policy.settings.trusted_proxies:
            peer = ctx.facts.client_ip
            if type(peer) is str or peer is None:
                cache = self.__dict__.get("_peer_keys")
                if cache is None or len(cache) >= ROUTE_CACHE_SIZE:
                    cache = self._peer_keys = {}
                cache[peer] = k
        return k

    def _fast(self, ctx: RequestContext, route: _Route, op: str) -> _Throttle | None:
        """:meth:`_throttle` of a fast route (every plan simple, no bans) when every plan has its
        key: only the store items are built per request; the names and modes come from the
        route, the owners are made only for a denial (:meth:`_throttled`). None when a key is
        missing (then :meth:`_throttle` works out which plans count)."""
        items: list[Item] = []
        keys: list[str] = []
        peek = op == "peek"
        facts = ctx.facts
        headers = facts.headers
        ip: str | None = None  # the "ip" key, worked out once for every plan that uses it
        for plan in route.plans:
            if plan.ip_key:
                k = ip = ip or self._peer_keys.get(facts.client_ip) or self._ip_key(ctx)
            elif plan.probe is not None and not headers.get(plan.probe):  # the key's header is absent
                if plan.fallback_ip:
                    k = ip = ip or self._peer_keys.get(facts.client_ip) or self._ip_key(ctx)
                elif plan.rule.fallback is None:
                    return None
                else:
                    k = ctx.key(plan.rule.fallback)  # type: ignore[assignment]
                    if k is None:
                        return None
            else:
                k = ctx.key_or_fallback(plan.rule.key, plan.rule.fallback)  # type: ignore[assignment]
                if k is None:
                    return None
            keys.append(k)
            skey = plan.prefix + k
            cost = 0 if peek else plan.cost
            for w in plan.rule.windows:
                items.append((skey, w, cost))  # type: ignore[arg-type]  # a simple plan's cost is constant
        t = _Throttle()
        t.items = items
        t.keys = keys
        t.names = route.names
        t.modes = route.modes
        return t

    def _throttle(self, ctx: RequestContext, route: _Route, op: str) -> _Throttle:
        """The store items of the route's throttle rules for this request."""
        t = _Throttle()
        items = t.items
        modes = t.modes
        owners = t.owners
        names = t.names
        quiet = op == "peek"
        for plan in route.plans:
            r = plan.rule
            k = ctx.ip_key() if plan.ip_key else ctx.key_or_fallback(r.key, r.fallback)
            if k is None:
                t.complete = False
                continue
            if quiet:
                cost = 0  # a status view: remaining as it is now; allowed if one unit could pass
            else:
                cost = plan.cost if plan.cost is not None else self._cost(r, ctx)
            skey = plan.prefix + k
            if plan.simple:
                mode = r.on_store_error
                for w, name in zip(r.windows, plan.names, strict=True):
                    items.append((skey, w, cost))
                    modes.append(mode)
                    owners.append((r, k))
                    names.append(name)
                continue
            if r.tiers is None:
                wins, wnames = r.windows, plan.names
            else:
                wins = self._windows(r, ctx)
                wnames = _names(r.name, wins)
                t.complete = False
            if not wins:
                if not r.shadow and t.no_budget is None:
                    t.no_budget = (r, k)
                continue
            if r.shadow:
                for w in wins:
                    t.shadow_items.append((skey, w, cost))
                    t.shadow_owners.append((r, k))
                continue
            for w, name in zip(wins, wnames, strict=True):
                items.append((skey, w, cost))
                modes.append(r.on_store_error)
                owners.append((r, k))
                names.append(name)
            if r.cost.source == "response_header":
                t.charges.append((r, k, wins))
        return t
