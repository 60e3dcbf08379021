"""The sections of a policy file: settings, rules, tiers, costs, bans, lists, JWT, responses."""

from __future__ import annotations

import json
import re
from typing import Any

from ratewarden.core.algorithms import ALGORITHMS, make_window
from ratewarden.core.algorithms.base import Window
from ratewarden.core.algorithms.sliding_log import SlidingLog
from ratewarden.core.algorithms.sliding_window import SlidingWindow
from ratewarden.core.calendar import Calendar
from ratewarden.core.rates import Rate, parse_rates
from ratewarden.errors import ConfigError, RateParseError
from ratewarden.policy.model import (
    BODY_VARIABLES,
    Ban,
    Blocklist,
    CostSpec,
    Descriptor,
    JWTConfig,
    ResponseConfig,
    Rule,
    Safelist,
    Settings,
    Tiers,
)
from ratewarden.policy.reader import HEADER_NAME_RE, KeyPath, Reader

__all__ = ["Sections"]

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
)
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
    "descriptor",
)
BAN_KEYS = ("name", "match", "key", "fallback", "mode", "max", "within", "ban_for", "shadow")
SAFELIST_KEYS = ("ips", "header_secret", "paths")
BLOCKLIST_KEYS = ("ips", "paths")
JWT_KEYS = (
    "algorithms",
    "secret",
    "public_key",
    "public_key_file",
    "jwks_file",
    "header",
    "cookie",
    "audience",
    "issuer",
    "leeway",
)
RESPONSE_KEYS = (
    "status",
    "code",
    "message",
    "ban_code",
    "ban_message",
    "block_code",
    "block_message",
    "unavailable_code",
    "unavailable_message",
    "body",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}$")
_BODY_PRESETS: dict[str, dict[str, str]] = {
    "default": dict(ResponseConfig().body),
    "minimal": {"error": "code", "retry_after": "retry_after"},
}


class Sections(Reader):
    """Validates each section into its model dataclass."""

    def settings(self, t: dict[str, Any]) -> Settings:
        p: KeyPath = ("ratewarden",)
        self.known(t, p, SETTINGS_KEYS, "[ratewarden]")
        d = Settings()
        algorithm = self.choice(t, (*p, "algorithm"), tuple(a for a in ALGORITHMS if a != "concurrency"), d.algorithm)
        storage = self.string(t, (*p, "storage"), d.storage)
        if "://" not in storage:
            self.fail(
                (*p, "storage"), f"storage must be a URL such as 'memory://' or 'redis://host:6379/0', not {storage!r}"
            )
        retry = t.get("store_error_retry_after", d.store_error_retry_after)
        if isinstance(retry, bool) or not isinstance(retry, int | float) or retry <= 0:
            self.fail((*p, "store_error_retry_after"), "'store_error_retry_after' must be a positive number of seconds")
        return Settings(
            storage=storage,
            headers=self.choice(t, (*p, "headers"), ("draft", "legacy", "both", "none"), d.headers),  # type: ignore[arg-type]
            legacy_reset=self.choice(t, (*p, "legacy_reset"), ("seconds", "epoch"), d.legacy_reset),  # type: ignore[arg-type]
            on_store_error=self.choice(t, (*p, "on_store_error"), ("allow", "deny", "local"), d.on_store_error),
            store_error_status=self.integer(t, (*p, "store_error_status"), d.store_error_status, 400, 599),
            store_error_retry_after=float(retry),
            trusted_proxies=self.networks(t, (*p, "trusted_proxies")),
            proxy_header=self.choice(t, (*p, "proxy_header"), ("x-forwarded-for", "forwarded"), d.proxy_header),  # type: ignore[arg-type]
            ipv6_prefix=self.integer(t, (*p, "ipv6_prefix"), d.ipv6_prefix, 1, 128),
            ipv4_prefix=self.integer(t, (*p, "ipv4_prefix"), d.ipv4_prefix, 1, 32),
            algorithm=algorithm,
            key_prefix=self.string(t, (*p, "key_prefix"), d.key_prefix),
            body_limit=self.integer(t, (*p, "body_limit"), d.body_limit, 0, 16 * 1024 * 1024),
            session_cookie=self.string(t, (*p, "session_cookie"), d.session_cookie),
            exempt=self.paths(t, (*p, "exempt")),
            max_key_length=self.integer(t, (*p, "max_key_length"), d.max_key_length, 16, 4096),
        )

    def windows(
        self, rates: tuple[Rate, ...], algorithm: str, params: dict[str, Any], path: KeyPath
    ) -> tuple[Window, ...]:
        try:
            wins = tuple(make_window(algorithm, r, **params) for r in rates)
        except ConfigError as exc:
            self.fail(path, str(exc))
        ids = [w.id for w in wins]
        if len(set(ids)) != len(ids):
            self.fail(path, f"two limits would share one state under {algorithm}: use different periods")
        return wins

    def rates(self, value: Any, path: KeyPath) -> tuple[Rate, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
            self.fail(path, f'limits must be a rate string or a list of them, e.g. ["5/20 minutes"], not {value!r}')
        out: list[Rate] = []
        for x in items:
            try:
                out.extend(parse_rates(x))
            except RateParseError as exc:
                self.fail(path, f"bad rate: {exc}")
        if len(set(out)) != len(out):
            self.fail(path, "a rate appears twice in limits")
        return tuple(out)

    def rule(self, t: Any, path: KeyPath, settings: Settings) -> Rule:
        if not isinstance(t, dict):
            self.fail(path, "each [[rule]] must be a table")
        self.known(t, path, RULE_KEYS, "[[rule]]")
        name = self.string(t, (*path, "name"))
        if not _NAME_RE.match(name):
            self.fail((*path, "name"), f"a rule name is 1-64 letters, digits, '_', '-', '.', ':' or '/', not {name!r}")
        if "limits" not in t:
            self.fail(path, f"rule {name!r} has no 'limits' (e.g. limits = [\"10/minute\"])")
        algorithm = self.choice(t, (*path, "algorithm"), tuple(ALGORITHMS), settings.algorithm)
        if algorithm == "concurrency":
            self.fail((*path, "algorithm"), "the concurrency algorithm is not available in a policy; use Limiter.lease")
        params: dict[str, Any] = {}
        if "burst" in t:
            if algorithm not in ("gcra", "token-bucket"):
                self.fail((*path, "burst"), f"'burst' applies to gcra and token-bucket, not {algorithm}")
            params["burst"] = self.integer(t, (*path, "burst"), 1, 1, 2**40)
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
        rates = self.rates(t["limits"], (*path, "limits"))
        windows = self.windows(rates, algorithm, params, (*path, "limits"))
        cost = self.cost(t.get("cost", 1), (*path, "cost"))
        if cost.after_response and any(not _can_charge(w) for w in windows):
            self.fail((*path, "cost"), f"{algorithm} cannot charge a cost after the response")
        on_err = self.choice(t, (*path, "on_store_error"), ("allow", "deny", "local"), settings.on_store_error)
        return Rule(
            name=name,
            match=self.match(t, path),
            key=self.key(t, (*path, "key"), "ip"),
            fallback=self.fallback(t, (*path, "fallback")),
            windows=windows,
            algorithm=algorithm,
            cost=cost,
            tiers=self.tiers(t["tiers"], (*path, "tiers"), rates, algorithm, params) if "tiers" in t else None,
            shadow=self.boolean(t, (*path, "shadow")),
            exempt=self.paths(t, (*path, "exempt")),
            on_store_error=on_err,
            line=self.lines.line(path),
            descriptor=self.descriptor(t["descriptor"], (*path, "descriptor")) if "descriptor" in t else None,
        )

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
            if v < 0:
                self.fail(path, f"cost must be >= 0, not {v}")
            return CostSpec("constant", v)
        if isinstance(v, str):
            for prefix, source in (("response.header:", "response_header"), ("header:", "header")):
                if v.startswith(prefix):
                    h = v[len(prefix) :].strip()
                    if not HEADER_NAME_RE.match(h):
                        self.fail(path, f"{h!r} is not a valid header name")
                    return CostSpec(source, 1, h.lower())  # type: ignore[arg-type]
        self.fail(path, f"cost must be an integer, 'header:NAME' or 'response.header:NAME', not {v!r}")

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
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    self.fail(tp, f'tier {name!r} must be a multiplier >= 0 (mode = "multiply"), not {v!r}')
                factors[name] = float(v)
                windows[name] = () if v == 0 else self.windows(tuple(r.scaled(v) for r in rates), algorithm, params, tp)
            elif v in (0, "0"):
                windows[name] = ()
            else:
                windows[name] = self.windows(self.rates(v, tp), algorithm, params, tp)
        if not windows:
            self.fail(path, "tiers name no tier")
        if default is not None and default not in windows:
            self.fail((*path, "default"), f"the default tier {default!r} is not one of {', '.join(windows)}")
        return Tiers(attr, mode, factors, windows, default)  # type: ignore[arg-type]

    def ban(self, t: Any, path: KeyPath) -> Ban:
        if not isinstance(t, dict):
            self.fail(path, "each [[ban]] must be a table")
        self.known(t, path, BAN_KEYS, "[[ban]]")
        name = self.string(t, (*path, "name"))
        if not _NAME_RE.match(name):
            self.fail((*path, "name"), f"a ban name is 1-64 letters, digits, '_', '-', '.', ':' or '/', not {name!r}")
        match = self.match(t, path, statuses=True)
        mode = self.choice(t, (*path, "mode"), ("fail2ban", "allow2ban"), "fail2ban" if match.statuses else "allow2ban")
        if mode == "fail2ban" and not match.statuses:
            self.fail((*path, "match"), "a fail2ban ban needs match.status, the response statuses that count")
        if "max" not in t:
            self.fail(path, f"ban {name!r} has no 'max'")
        mx = self.integer(t, (*path, "max"), 1, 1, 1_000_000)
        within = self.duration(t, (*path, "within"))
        ban_for = self.duration(t, (*path, "ban_for"))
        counter: Window = SlidingLog(Rate(mx, within)) if mx <= 1000 else SlidingWindow(Rate(mx, within))
        return Ban(
            name=name,
            match=match,
            key=self.key(t, (*path, "key"), "ip"),
            fallback=self.fallback(t, (*path, "fallback")),
            mode=mode,  # type: ignore[arg-type]
            max=mx,
            within_us=within,
            ban_for_us=ban_for,
            counter=counter,
            ban=SlidingLog(Rate(1, ban_for)),
            shadow=self.boolean(t, (*path, "shadow")),
            line=self.lines.line(path),
        )

    def safelist(self, t: dict[str, Any]) -> Safelist:
        p: KeyPath = ("safelist",)
        self.known(t, p, SAFELIST_KEYS, "[safelist]")
        header, secret = "", ""
        if "header_secret" in t:
            hp = (*p, "header_secret")
            hs = self.table(t, hp)
            self.known(hs, hp, ("header", "env", "value"), "header_secret")
            header = self.string(hs, (*hp, "header"))
            if not HEADER_NAME_RE.match(header):
                self.fail((*hp, "header"), f"{header!r} is not a valid header name")
            if ("env" in hs) == ("value" in hs):
                self.fail(hp, 'header_secret needs exactly one of env = "VAR" or value = "${VAR}"')
            if "env" in hs:
                var = self.string(hs, (*hp, "env"))
                if var not in self.env:
                    self.fail((*hp, "env"), f"the environment variable {var} is not set (header_secret)")
                secret = self.env[var]
            else:
                secret = self.string(hs, (*hp, "value"))
            if len(secret) < 8:
                self.fail(hp, "the header secret is empty or shorter than 8 characters")
        return Safelist(self.networks(t, (*p, "ips")), header.lower(), secret, self.paths(t, (*p, "paths")))

    def blocklist(self, t: dict[str, Any]) -> Blocklist:
        p: KeyPath = ("blocklist",)
        self.known(t, p, BLOCKLIST_KEYS, "[blocklist]")
        return Blocklist(self.networks(t, (*p, "ips")), self.paths(t, (*p, "paths")))

    def jwt(self, t: Any) -> JWTConfig:
        p: KeyPath = ("jwt",)
        if not isinstance(t, dict):
            self.fail(p, "[jwt] must be a table")
        self.known(t, p, JWT_KEYS, "[jwt]")
        algorithms = self.strings(t, (*p, "algorithms")) or ("HS256",)
        sources = [k for k in ("secret", "public_key", "public_key_file", "jwks_file") if k in t]
        if len(sources) != 1:
            self.fail(p, "[jwt] needs exactly one of secret, public_key, public_key_file or jwks_file")
        src = sources[0]
        hmac_algs = all(a.startswith("HS") for a in algorithms)
        if any(a.startswith("HS") for a in algorithms) and not hmac_algs:
            self.fail((*p, "algorithms"), "do not mix HS* with public-key algorithms (algorithm confusion)")
        if any(a.lower() == "none" for a in algorithms):
            self.fail((*p, "algorithms"), "the 'none' algorithm is never accepted")
        if hmac_algs != (src == "secret"):
            self.fail((*p, src), f"{src} does not fit the algorithms {', '.join(algorithms)}")
        secret, public_key = "", ""
        jwks: dict[str, Any] = {}
        if src == "secret":
            secret = self.string(t, (*p, "secret"))
            if len(secret) < 16:
                self.fail((*p, "secret"), "the JWT secret is shorter than 16 characters")
        elif src == "public_key":
            public_key = self.string(t, (*p, "public_key"))
        else:
            fp = self.base_dir / self.string(t, (*p, src))
            try:
                content = fp.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self.fail((*p, src), f"cannot read {fp}: {exc}")
            if src == "public_key_file":
                public_key = content
            else:
                jwks = self.load_jwks(content, (*p, src))
        if public_key:
            try:
                import jwt as pyjwt

                pyjwt.get_algorithm_by_name(algorithms[0]).prepare_key(public_key)
            except Exception as exc:
                self.fail((*p, src), f"not a usable public key for {algorithms[0]}: {exc}")
        leeway = t.get("leeway", 0)
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or leeway < 0:
            self.fail((*p, "leeway"), "'leeway' must be a number of seconds >= 0")
        header = self.string(t, (*p, "header"), "authorization").lower()
        return JWTConfig(
            algorithms=algorithms,
            secret=secret,
            public_key=public_key,
            jwks=jwks,
            header=header,
            cookie=self.string(t, (*p, "cookie"), ""),
            audience=t.get("audience"),
            issuer=t.get("issuer"),
            leeway=float(leeway),
        )

    def load_jwks(self, content: str, path: KeyPath) -> dict[str, Any]:
        import jwt as pyjwt

        try:
            data = json.loads(content)
            keys = pyjwt.PyJWKSet.from_dict(data).keys
        except Exception as exc:
            self.fail(path, f"not a usable JWKS file: {exc}")
        return {(k.key_id or f"#{i}"): k for i, k in enumerate(keys)}

    def response(self, t: dict[str, Any]) -> ResponseConfig:
        p: KeyPath = ("response",)
        self.known(t, p, RESPONSE_KEYS, "[response]")
        d = ResponseConfig()
        body = t.get("body", "default")
        if isinstance(body, str):
            if body not in _BODY_PRESETS:
                self.fail((*p, "body"), f"body must be a table or one of {', '.join(_BODY_PRESETS)}, not {body!r}")
            body = _BODY_PRESETS[body]
        if not isinstance(body, dict) or not body:
            self.fail((*p, "body"), "body must be a table of output field = variable")
        for k, v in body.items():
            if v not in BODY_VARIABLES:
                self.fail(
                    (*p, "body", k),
                    f"unknown body variable {v!r} for {k!r}; use one of {', '.join(sorted(BODY_VARIABLES))}",
                )
        strs = {k: self.string(t, (*p, k), getattr(d, k)) for k in RESPONSE_KEYS if k not in ("status", "body")}
        return ResponseConfig(status=self.integer(t, (*p, "status"), 429, 400, 599), body=dict(body), **strs)


def _can_charge(w: Window) -> bool:
    return type(w).charge is not Window.charge
