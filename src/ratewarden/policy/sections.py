"""The sections of a policy file: settings, rules, tiers, costs (bans, lists, JWT and responses are
in :mod:`ratewarden.policy.guards`, whose reader ``Sections`` extends)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from ratewarden.core.algorithms import ALGORITHMS, make_window
from ratewarden.core.algorithms.base import Window
from ratewarden.core.calendar import Calendar
from ratewarden.core.rates import LIMIT_MAX, Rate, parse_rates
from ratewarden.errors import ConfigError, RateParseError, RatewardenError
from ratewarden.policy.guards import (
    BAN_KEYS,
    BLOCKLIST_KEYS,
    JWT_KEYS,
    RESPONSE_KEYS,
    SAFELIST_KEYS,
    GuardSections,
)
from ratewarden.policy.model import CostSpec, Descriptor, Rule, Settings, Tiers
from ratewarden.policy.reader import HEADER_NAME_RE, KeyPath, show_value

__all__ = [
    "BAN_KEYS",
    "BLOCKLIST_KEYS",
    "FAIL_MODES",
    "JWT_KEYS",
    "POLICY_ALGORITHMS",
    "RESPONSE_KEYS",
    "SAFELIST_KEYS",
    "Sections",
]

#: what a policy may name as an algorithm: every one but ``concurrency`` (a lease held across a
#: request needs ``Limiter.lease``, not a rule)
POLICY_ALGORITHMS = tuple(a for a in ALGORITHMS if a != "concurrency")
FAIL_MODES = ("allow", "deny", "local")

SETTINGS_KEYS = (
    "storage",
    "headers",
    "legacy_reset",
    "on_store_error",
    "store_error_status",
    "store_error_retry_after",
    "trusted_proxies",
    "proxy_header",
    "ipv6_prefix",
    "ipv4_prefix",
    "algorithm",
    "key_prefix",
    "body_limit",
    "session_cookie",
    "exempt",
    "max_key_length",
    "key_secret",
    "readable_keys",
)
#: key kinds that may be stored readable; the others come from secrets and are always hashed
READABLE_KINDS = ("ip", "user", "query", "body")
RULE_KEYS = (
    "name",
    "match",
    "key",
    "fallback",
    "limits",
    "algorithm",
    "burst",
    "period",
    "cost",
    "tiers",
    "shadow",
    "exempt",
    "on_store_error",
    "on_oversize_body",
    "descriptor",
)


class Sections(GuardSections):
    """Validates each section into its model dataclass."""

    def settings(self, t: dict[str, Any]) -> Settings:
        """``[ratewarden]``; each bad setting is reported and its default used meanwhile."""
        p: KeyPath = ("ratewarden",)
        self.known(t, p, SETTINGS_KEYS, "[ratewarden]")
        d = Settings()

        def get(read: Callable[[], Any], default: Any) -> Any:
            v = self.attempt(read)
            return default if v is None else v

        return Settings(
            storage=get(lambda: self.storage(t, (*p, "storage"), d.storage), d.storage),
            headers=get(
                lambda: self.choice(t, (*p, "headers"), ("draft", "legacy", "both", "none"), d.headers), d.headers
            ),
            legacy_reset=get(
                lambda: self.choice(t, (*p, "legacy_reset"), ("seconds", "epoch"), d.legacy_reset), d.legacy_reset
            ),
            on_store_error=get(
                lambda: self.choice(t, (*p, "on_store_error"), FAIL_MODES, d.on_store_error), d.on_store_error
            ),
            store_error_status=get(
                lambda: self.integer(t, (*p, "store_error_status"), d.store_error_status, 400, 599),
                d.store_error_status,
            ),
            store_error_retry_after=get(
                lambda: self.seconds(t, (*p, "store_error_retry_after"), d.store_error_retry_after),
                d.store_error_retry_after,
            ),
            trusted_proxies=get(lambda: self.networks(t, (*p, "trusted_proxies")), d.trusted_proxies),
            proxy_header=get(
                lambda: self.choice(t, (*p, "proxy_header"), ("x-forwarded-for", "forwarded"), d.proxy_header),
                d.proxy_header,
            ),
            ipv6_prefix=get(lambda: self.integer(t, (*p, "ipv6_prefix"), d.ipv6_prefix, 1, 128), d.ipv6_prefix),
            ipv4_prefix=get(lambda: self.integer(t, (*p, "ipv4_prefix"), d.ipv4_prefix, 1, 32), d.ipv4_prefix),
            algorithm=get(lambda: self.algorithm(t, (*p, "algorithm"), d.algorithm), d.algorithm),
            key_prefix=get(lambda: self.string(t, (*p, "key_prefix"), d.key_prefix), d.key_prefix),
            body_limit=get(
                lambda: self.integer(t, (*p, "body_limit"), d.body_limit, 0, 16 * 1024 * 1024), d.body_limit
            ),
            session_cookie=get(lambda: self.string(t, (*p, "session_cookie"), d.session_cookie), d.session_cookie),
            exempt=get(lambda: self.paths(t, (*p, "exempt")), d.exempt),
            max_key_length=get(
                lambda: self.integer(t, (*p, "max_key_length"), d.max_key_length, 16, 4096), d.max_key_length
            ),
            key_secret=get(lambda: self.key_secret(t, (*p, "key_secret")), ""),
            readable_keys=get(lambda: self.readable_keys(t, (*p, "readable_keys")), frozenset()),
        )

    def storage(self, t: dict[str, Any], path: KeyPath, default: str) -> str:
        storage = self.string(t, path, default)
        if "://" not in storage:
            self.fail(path, f"storage must be a URL such as 'memory://' or 'redis://host:6379/0', not {storage!r}")
        return storage

    def algorithm(self, t: dict[str, Any], path: KeyPath, default: str) -> str:
        """An algorithm a policy can use (every one but ``concurrency``, which needs a lease)."""
        if t.get(str(path[-1])) == "concurrency":
            self.fail(path, "the concurrency algorithm is not available in a policy; use Limiter.lease")
        return self.choice(t, path, POLICY_ALGORITHMS, default)

    def windows(
        self, rates: tuple[Rate, ...], algorithm: str, params: dict[str, Any], path: KeyPath
    ) -> tuple[Window, ...]:
        try:
            wins = tuple(make_window(algorithm, r, **params) for r in rates)
        except RatewardenError as exc:
            self.fail(path, str(exc))
        ids = [w.id for w in wins]
        if len(set(ids)) != len(ids):
            self.fail(path, f"two limits would share one state under {algorithm}: use different periods")
        return wins

    def rates(self, value: Any, path: KeyPath) -> tuple[Rate, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
            self.fail(path, f'limits must be a rate string or a list of them, e.g. ["5/20 minutes"], not {value!r:.60}')
        out: list[Rate] = []
        for x in items:
            try:
                out.extend(parse_rates(x))
            except RateParseError as exc:
                self.fail(path, f"bad rate: {exc}")
        if len(set(out)) != len(out):
            self.fail(path, "a rate appears twice in limits")
        return tuple(out)

    def rule(self, t: Any, path: KeyPath, settings: Settings) -> Rule | None:
        """One ``[[rule]]``; None when it has mistakes (each independent one is reported)."""
        if not isinstance(t, dict):
            self.fail(path, "each [[rule]] must be a table")
        start = len(self.errors)
        meant = self.known(t, path, RULE_KEYS, "[[rule]]")  # a misspelt key is not also "missing"
        name = None if "name" in meant and "name" not in t else self.attempt(lambda: self.name(t, path, "rule"))
        label = repr(name) if name is not None else f"#{int(path[-1]) + 1}"
        algorithm = self.attempt(lambda: self.algorithm(t, (*path, "algorithm"), settings.algorithm))
        params = None if algorithm is None else self.attempt(lambda: self.params(t, path, algorithm))
        rates = None
        if "limits" not in t:
            if "limits" not in meant:
                self.report(path, f"rule {label} has no 'limits' (e.g. limits = [\"10/minute\"])")
        else:
            rates = self.attempt(lambda: self.rates(t["limits"], (*path, "limits")))
        windows = None
        if rates is not None and algorithm is not None and params is not None:
            windows = self.attempt(lambda: self.windows(rates, algorithm, params, (*path, "limits")))
        cost = self.attempt(lambda: self.cost(t.get("cost", 1), (*path, "cost")))
        if cost is not None and windows is not None and cost.after_response and not all(map(_can_charge, windows)):
            self.report((*path, "cost"), f"{algorithm} cannot charge a cost after the response")
        tiers = None
        if "tiers" in t and rates is not None and algorithm is not None and params is not None:
            tiers = self.attempt(lambda: self.tiers(t["tiers"], (*path, "tiers"), rates, algorithm, params))
        on_err = self.attempt(lambda: self.choice(t, (*path, "on_store_error"), FAIL_MODES, settings.on_store_error))
        match = self.attempt(lambda: self.match(t, path))
        key = self.attempt(lambda: self.key(t, (*path, "key"), "ip"))
        fallback = self.attempt(lambda: (self.fallback(t, (*path, "fallback")),))
        shadow = self.attempt(lambda: self.boolean(t, (*path, "shadow")))
        exempt = self.attempt(lambda: self.paths(t, (*path, "exempt")))
        oversize = self.attempt(lambda: self.oversize(t, (*path, "on_oversize_body"), key))
        descriptor = (
            self.attempt(lambda: (self.descriptor(t["descriptor"], (*path, "descriptor")),))
            if "descriptor" in t
            else (None,)
        )
        if (
            len(self.errors) > start
            or name is None
            or algorithm is None
            or windows is None
            or cost is None
            or on_err is None
            or match is None
            or key is None
            or fallback is None
            or shadow is None
            or exempt is None
            or oversize is None
            or descriptor is None
        ):
            return None
        return Rule(
            name=name,
            match=match,
            key=key,
            fallback=fallback[0],
            windows=windows,
            algorithm=algorithm,
            cost=cost,
            tiers=tiers,
            shadow=shadow,
            exempt=exempt,
            on_store_error=on_err,
            line=self.lines.line(path),
            on_oversize_body=oversize,
            descriptor=descriptor[0],
        )

    def oversize(self, t: dict[str, Any], path: KeyPath, key: Any) -> Literal["fallback", "deny"]:
        """``on_oversize_body``: what a body over body_limit does to a rule keyed by the body."""
        oversize = self.choice(t, path, ("fallback", "deny"), "fallback")
        if oversize == "deny" and key is not None and not key.needs_body:
            self.fail(path, "on_oversize_body applies to a rule whose key reads the body (body:FIELD)")
        return oversize  # type: ignore[return-value]

    def key_secret(self, t: dict[str, Any], path: KeyPath) -> str:
        """The secret of the keyed hash of stored key values (at least 16 characters when set)."""
        key_secret = self.string(t, path, self.env.get("RATEWARDEN_KEY_SECRET", ""))
        if key_secret and len(key_secret) < 16:
            self.fail(path, "key_secret is shorter than 16 characters")
        return key_secret

    def readable_keys(self, t: dict[str, Any], path: KeyPath) -> frozenset[str]:
        readable = self.strings(t, path)
        for kind in readable:
            if kind not in READABLE_KINDS:
                self.fail(
                    path,
                    f"{kind!r} cannot be stored readable: readable_keys takes {', '.join(READABLE_KINDS)}"
                    " (session, cookie, header and jwt values are secrets and always hashed)",
                )
        return frozenset(readable)

    def params(self, t: dict[str, Any], path: KeyPath, algorithm: str) -> dict[str, Any]:
        """The algorithm's parameters: ``burst`` (gcra, token-bucket), ``period`` (quota)."""
        params: dict[str, Any] = {}
        if "burst" in t:
            if algorithm not in ("gcra", "token-bucket"):
                self.fail((*path, "burst"), f"'burst' applies to gcra and token-bucket, not {algorithm}")
            params["burst"] = self.integer(t, (*path, "burst"), 1, 1, LIMIT_MAX)
        if "period" in t:
            pp = (*path, "period")
            if algorithm != "quota":
                self.fail(pp, f"'period' applies to the quota algorithm, not {algorithm}")
            per = self.table(t, pp)
            self.known(per, pp, ("reset", "tz"), "period")
            params["reset"] = self.string(per, (*pp, "reset"), "00:00")
            params["tz"] = self.string(per, (*pp, "tz"), "UTC")
            try:
                Calendar("day", params["tz"], params["reset"])
            except ConfigError as exc:
                self.fail(pp, str(exc))
        return params

    def descriptor(self, t: Any, path: KeyPath) -> Descriptor:
        """``{ domain = "edge", entries = ["remote_address", "path=/login"] }``: the Envoy
        descriptor this rule answers; ``key=value`` pins a value, a bare key supplies the rule's key."""
        if not isinstance(t, dict):
            self.fail(path, 'descriptor must be a table, e.g. { domain = "edge", entries = ["remote_address"] }')
        self.known(t, path, ("domain", "entries"), "descriptor")
        domain = self.string(t, (*path, "domain"))
        if not domain:
            self.fail((*path, "domain"), "the descriptor domain is empty")
        raw = self.strings(t, (*path, "entries"), allow_single=False)
        entries: list[tuple[str, str | None]] = []
        for e in raw:
            k, eq, v = e.partition("=")
            if not k.strip():
                self.fail((*path, "entries"), f"a descriptor entry needs a key, not {e!r}")
            entries.append((k.strip(), v if eq else None))
        if not entries:
            self.fail((*path, "entries"), "a descriptor needs at least one entry")
        if all(v is not None for _, v in entries):
            self.fail((*path, "entries"), "every entry is pinned: leave one key bare to say whose limit it is")
        return Descriptor(domain, tuple(entries))

    def cost(self, v: Any, path: KeyPath) -> CostSpec:
        if type(v) is int:
            if not 0 <= v <= LIMIT_MAX:
                self.fail(path, f"cost must be >= 0 and at most {LIMIT_MAX:,} (10^12), not {show_value(v)}")
            return CostSpec("constant", v)
        if isinstance(v, str):
            for prefix, source in (("response.header:", "response_header"), ("header:", "header")):
                if v.startswith(prefix):
                    h = v[len(prefix) :].strip()
                    if not HEADER_NAME_RE.match(h):
                        self.fail(path, f"{h!r} is not a valid header name")
                    return CostSpec(source, 1, h.lower())  # type: ignore[arg-type]
        self.fail(path, f"cost must be an integer, 'header:NAME' or 'response.header:NAME', not {show_value(v)}")

    def tiers(self, t: Any, path: KeyPath, rates: tuple[Rate, ...], algorithm: str, params: dict[str, Any]) -> Tiers:
        if not isinstance(t, dict):
            self.fail(path, "'tiers' must be a table, e.g. { claim = \"role\", OWNER = 3, READER = 1 }")
        attrs = [k for k in ("claim", "attr") if k in t]
        if len(attrs) != 1:
            self.fail(path, "tiers need exactly one of 'claim' or 'attr' (the identity attribute to read)")
        attr = self.string(t, (*path, attrs[0]))
        mode = self.choice(t, (*path, "mode"), ("multiply", "replace"), "multiply")
        default = t.get("default")
        factors: dict[str, float] = {}
        windows: dict[str, tuple[Window, ...]] = {}
        for name, v in t.items():
            if name in ("claim", "attr", "mode", "default"):
                continue
            tp = (*path, name)
            if mode == "multiply":
                top = LIMIT_MAX / max(r.limit for r in rates)  # no limit may grow past LIMIT_MAX
                number = not isinstance(v, bool) and isinstance(v, int | float)
                if not number or not 0 <= v <= top:  # NaN fails too
                    self.fail(
                        tp,
                        f'tier {name!r} must be a multiplier >= 0 (mode = "multiply") and at most {top:g} '
                        f"(no limit above {LIMIT_MAX:,}), not {show_value(v)}",
                    )
                factors[name] = float(v)
                windows[name] = () if v == 0 else self.windows(tuple(r.scaled(v) for r in rates), algorithm, params, tp)
            elif v in (0, "0"):
                windows[name] = ()
            else:
                windows[name] = self.windows(self.rates(v, tp), algorithm, params, tp)
        if not windows:
            self.fail(path, "tiers name no tier")
        if default is not None and (not isinstance(default, str) or default not in windows):
            self.fail((*path, "default"), f"the default tier {default!r} is not one of {', '.join(windows)}")
        return Tiers(attr, mode, factors, windows, default)  # type: ignore[arg-type]


def _can_charge(w: Window) -> bool:
    return type(w).charge is not Window.charge
