"""Load and validate a policy file (DESIGN.md section 6) into :class:`~ratewarden.policy.model.Policy`.

Every mistake is a :class:`PolicyError` naming the file, the line and the reason: an unknown key
(with the keys that are allowed), a bad rate, a bad CIDR, a missing ``${ENV}`` variable, a
duplicate rule name, an option that does not fit the algorithm...

Environment (documented in docs/policy.md):

* ``RATEWARDEN_PROFILE=NAME`` applies the ``[profile.NAME]`` overrides (or ``profile=`` here);
* ``RATEWARDEN_STORAGE``, ``RATEWARDEN_HEADERS``, ``RATEWARDEN_ON_STORE_ERROR`` override the
  ``[ratewarden]`` settings of the same name (after the profile);
* ``${NAME}`` (or ``${NAME:-default}``) in any string is replaced by the variable, and a missing
  variable without a default fails the load.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from ratewarden.core.algorithms import ALGORITHMS, make_window
from ratewarden.core.algorithms.base import Window
from ratewarden.core.algorithms.sliding_log import SlidingLog
from ratewarden.core.algorithms.sliding_window import SlidingWindow
from ratewarden.core.calendar import Calendar
from ratewarden.core.rates import Rate, parse_duration, parse_rates
from ratewarden.errors import ConfigError, RateParseError
from ratewarden.policy.lines import LineIndex
from ratewarden.policy.model import (
    BODY_VARIABLES,
    Ban,
    Blocklist,
    CostSpec,
    JWTConfig,
    KeyPart,
    KeySpec,
    Match,
    Network,
    Policy,
    ResponseConfig,
    Rule,
    Safelist,
    Settings,
    Tiers,
)

__all__ = ["PolicyError", "load_policy", "loads_policy", "parse_key"]

_Path = tuple[str | int, ...]

TOP_KEYS = ("ratewarden", "rule", "ban", "safelist", "blocklist", "jwt", "response", "profile")
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
)
BAN_KEYS = ("name", "match", "key", "fallback", "mode", "max", "within", "ban_for", "shadow")
MATCH_KEYS = ("path", "methods", "host", "scheme")
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
KEY_KINDS = ("ip", "user", "session", "header", "cookie", "jwt", "query", "body")
_NAMED_KINDS = ("header", "cookie", "jwt", "query", "body")
_FILTERS = ("lower", "upper", "strip")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_BODY_PRESETS: dict[str, dict[str, str]] = {
    "default": dict(ResponseConfig().body),
    "minimal": {"error": "code", "retry_after": "retry_after"},
}


class PolicyError(ConfigError):
    """A policy that cannot be loaded: ``file``, ``line`` (0 when unknown) and ``reason``."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        super().__init__(f"{file}:{line}: {reason}" if line else f"{file}: {reason}")


def load_policy(
    path: str | os.PathLike[str], *, profile: str | None = None, env: Mapping[str, str] | None = None
) -> Policy:
    """Read and validate a policy file. Raises :class:`PolicyError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(p), 0, f"cannot read the policy file: {exc}") from None
    return loads_policy(text, source=str(p), profile=profile, env=env, base_dir=p.parent)


def loads_policy(
    text: str,
    *,
    source: str = "<string>",
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Policy:
    """Validate a policy given as TOML text. Raises :class:`PolicyError`."""
    return _Loader(text, source, os.environ if env is None else env, profile, Path(base_dir or ".")).load()


def parse_key(text: str) -> KeySpec:
    """``"body:email|lower"``, ``"ip+header:X-Api-Key"`` -> :class:`KeySpec`. Raises ConfigError."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("a key is a non-empty string such as 'ip', 'user' or 'header:X-Api-Key'")
    parts: list[KeyPart] = []
    for raw in text.split("+"):
        base, *filters = [s.strip() for s in raw.split("|")]
        kind, sep, name = base.partition(":")
        kind = kind.strip().lower()
        name = name.strip()
        if kind not in KEY_KINDS:
            raise ConfigError(f"unknown key source {kind!r} in {text!r}; use one of {', '.join(KEY_KINDS)}")
        if kind in _NAMED_KINDS and not name:
            raise ConfigError(f"the key source {kind!r} needs a name, e.g. '{kind}:NAME' (in {text!r})")
        if kind not in _NAMED_KINDS and sep:
            raise ConfigError(f"the key source {kind!r} takes no name (in {text!r})")
        if kind in ("header",):
            if not _HEADER_NAME_RE.match(name):
                raise ConfigError(f"{name!r} is not a valid header name (in {text!r})")
            name = name.lower()
        for f in filters:
            if f not in _FILTERS:
                raise ConfigError(f"unknown key filter {f!r} in {text!r}; use one of {', '.join(_FILTERS)}")
        parts.append(KeyPart(kind, name, tuple(filters)))
    return KeySpec(tuple(parts), text.strip())


class _Loader:
    def __init__(self, text: str, source: str, env: Mapping[str, str], profile: str | None, base_dir: Path) -> None:
        self.text = text
        self.source = source
        self.env = env
        self.profile = profile if profile is not None else (env.get("RATEWARDEN_PROFILE") or None)
        self.base_dir = base_dir
        self.lines = LineIndex(text)

    def fail(self, path: _Path, reason: str) -> NoReturn:
        raise PolicyError(self.source, self.lines.line(path), reason)

    # -- top level ---------------------------------------------------------------------------

    def load(self) -> Policy:
        try:
            raw = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"at line (\d+)", str(exc))
            raise PolicyError(self.source, int(m.group(1)) if m else 0, f"not valid TOML: {exc}") from None
        self.known(raw, (), TOP_KEYS, "the top level")
        raw = self.apply_profile(raw)
        raw = self.substitute(raw, ())
        settings_raw = self.table(raw, ("ratewarden",))
        for var, key in (
            ("RATEWARDEN_STORAGE", "storage"),
            ("RATEWARDEN_HEADERS", "headers"),
            ("RATEWARDEN_ON_STORE_ERROR", "on_store_error"),
        ):
            if self.env.get(var):
                settings_raw = {**settings_raw, key: self.env[var]}
        settings = self.settings(settings_raw)
        rules_raw = raw.get("rule", [])
        if not isinstance(rules_raw, list):
            self.fail(("rule",), "'rule' must be an array of tables: write [[rule]]")
        rules = tuple(self.rule(r, ("rule", i), settings) for i, r in enumerate(rules_raw))
        self.unique([r.name for r in rules], "rule")
        bans_raw = raw.get("ban", [])
        if not isinstance(bans_raw, list):
            self.fail(("ban",), "'ban' must be an array of tables: write [[ban]]")
        bans = tuple(self.ban(b, ("ban", i)) for i, b in enumerate(bans_raw))
        self.unique([b.name for b in bans], "ban")
        jwt_cfg = self.jwt(raw["jwt"]) if "jwt" in raw else None
        if jwt_cfg is None:
            for i, r in enumerate(rules):
                if any(p.kind == "jwt" for p in r.key.parts):
                    self.fail(("rule", i, "key"), f"rule {r.name!r} uses a jwt: key but there is no [jwt] table")
        return Policy(
            settings=settings,
            rules=rules,
            bans=bans,
            safelist=self.safelist(self.table(raw, ("safelist",))),
            blocklist=self.blocklist(self.table(raw, ("blocklist",))),
            jwt=jwt_cfg,
            response=self.response(self.table(raw, ("response",))),
            source=self.source,
            profile=self.profile,
        )

    def apply_profile(self, raw: dict[str, Any]) -> dict[str, Any]:
        profiles = raw.pop("profile", {})
        if not isinstance(profiles, dict):
            self.fail(("profile",), "'profile' must be a table of tables: [profile.NAME]")
        if self.profile is None:
            return raw
        if self.profile not in profiles:
            names = ", ".join(sorted(profiles)) or "none defined"
            self.fail(("profile",), f"unknown profile {self.profile!r} (RATEWARDEN_PROFILE); profiles: {names}")
        prof = profiles[self.profile]
        base: _Path = ("profile", self.profile)
        if not isinstance(prof, dict):
            self.fail(base, f"[profile.{self.profile}] must be a table")
        self.known(prof, base, ("ratewarden", "rule", "ban", "response", "safelist", "blocklist"), "a profile")
        out = dict(raw)
        for section in ("ratewarden", "response", "safelist", "blocklist"):
            if section in prof:
                over = self.table(prof, (*base, section), where=(section,))
                out[section] = {**self.table(raw, (section,)), **over}
                for k in over:
                    self.lines.alias((section, k), (*base, section, k))
        for section in ("rule", "ban"):
            if section not in prof:
                continue
            overrides = self.table(prof, (*base, section), where=(section,))
            items = [dict(x) if isinstance(x, dict) else x for x in raw.get(section, [])]
            by_name = {x.get("name"): i for i, x in enumerate(items) if isinstance(x, dict)}
            for name, over in overrides.items():
                if name not in by_name:
                    known = ", ".join(str(n) for n in by_name) or "none"
                    self.fail(
                        (*base, section, name), f"the profile overrides unknown {section} {name!r} (known: {known})"
                    )
                if not isinstance(over, dict):
                    self.fail((*base, section, name), f"[profile.{self.profile}.{section}.{name}] must be a table")
                if "name" in over:
                    self.fail((*base, section, name, "name"), "a profile cannot rename a rule")
                i = by_name[name]
                items[i].update(over)
                for k in over:
                    self.lines.alias((section, i, k), (*base, section, name, k))
            out[section] = items
        return out

    def substitute(self, value: Any, path: _Path) -> Any:
        if isinstance(value, str):
            if "${" not in value:
                return value

            def repl(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                if name in self.env:
                    return self.env[name]
                if default is not None:
                    return default
                self.fail(path, f"the environment variable {name} is not set (referenced as ${{{name}}})")

            return _ENV_RE.sub(repl, value)
        if isinstance(value, dict):
            return {k: self.substitute(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, (*path, i)) for i, v in enumerate(value)]
        return value

    # -- helpers -----------------------------------------------------------------------------

    def known(self, table: Mapping[str, Any], path: _Path, allowed: tuple[str, ...], what: str) -> None:
        for k in table:
            if k not in allowed:
                self.fail((*path, k), f"unknown key {k!r} in {what}; allowed: {', '.join(allowed)}")

    def table(self, raw: Mapping[str, Any], path: _Path, where: _Path | None = None) -> dict[str, Any]:
        v = raw.get(str(path[-1]), {})
        if not isinstance(v, dict):
            self.fail(path, f"{'.'.join(str(p) for p in (where or path))} must be a table")
        return v

    def unique(self, names: list[str], what: str) -> None:
        seen: set[str] = set()
        for i, n in enumerate(names):
            if n in seen:
                self.fail((what, i, "name"), f"two {what}s are named {n!r}; names must be unique")
            seen.add(n)

    def string(self, t: Mapping[str, Any], path: _Path, default: str | None = None) -> str:
        v = t.get(str(path[-1]), default)
        if v is None:
            self.fail(path[:-1], f"missing required key {path[-1]!r}")
        if not isinstance(v, str):
            self.fail(path, f"{path[-1]!r} must be a string, not {_tname(v)}")
        return v

    def choice(self, t: Mapping[str, Any], path: _Path, choices: tuple[str, ...], default: str) -> str:
        v = self.string(t, path, default)
        if v not in choices:
            self.fail(path, f"{path[-1]!r} must be one of {', '.join(repr(c) for c in choices)}, not {v!r}")
        return v

    def integer(self, t: Mapping[str, Any], path: _Path, default: int, lo: int, hi: int) -> int:
        v = t.get(str(path[-1]), default)
        if type(v) is not int or not lo <= v <= hi:
            self.fail(path, f"{path[-1]!r} must be an integer from {lo} to {hi}, not {v!r}")
        return v

    def boolean(self, t: Mapping[str, Any], path: _Path, default: bool = False) -> bool:
        v = t.get(str(path[-1]), default)
        if not isinstance(v, bool):
            self.fail(path, f"{path[-1]!r} must be true or false, not {v!r}")
        return v

    def strings(self, t: Mapping[str, Any], path: _Path, *, allow_single: bool = True) -> tuple[str, ...]:
        v = t.get(str(path[-1]), [])
        if isinstance(v, str) and allow_single:
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.fail(path, f"{path[-1]!r} must be a list of strings")
        return tuple(v)

    def duration(self, t: Mapping[str, Any], path: _Path) -> int:
        if path[-1] not in t:
            self.fail(path[:-1], f"missing required key {path[-1]!r}")
        try:
            return parse_duration(t[str(path[-1])])
        except RateParseError as exc:
            self.fail(path, f"bad duration for {path[-1]!r}: {exc}")

    def networks(self, t: Mapping[str, Any], path: _Path) -> tuple[Network, ...]:
        out: list[Network] = []
        for i, s in enumerate(self.strings(t, path)):
            try:
                out.append(ipaddress.ip_network(s.strip(), strict=True))
            except ValueError as exc:
                self.fail((*path, i), f"bad IP address or CIDR {s!r}: {exc}")
        return tuple(out)

    def paths(self, t: Mapping[str, Any], path: _Path) -> tuple[str, ...]:
        pats = self.strings(t, path)
        for p in pats:
            if not p.startswith(("/", "*")):
                self.fail(path, f"a path pattern starts with '/' or '*', not {p!r}")
        return pats

    def key(self, t: Mapping[str, Any], path: _Path, default: str) -> KeySpec:
        text = self.string(t, path, default)
        try:
            return parse_key(text)
        except ConfigError as exc:
            self.fail(path, str(exc))

    def fallback(self, t: Mapping[str, Any], path: _Path) -> KeySpec | None:
        text = self.string(t, path, "ip")
        if text in ("skip", "none"):
            return None
        try:
            return parse_key(text)
        except ConfigError as exc:
            self.fail(path, f"bad fallback: {exc} (or use 'skip')")

    def match(self, t: Mapping[str, Any], path: _Path, *, statuses: bool = False) -> Match:
        m = t.get("match", {})
        mp = (*path, "match")
        if not isinstance(m, dict):
            self.fail(mp, '\'match\' must be a table, e.g. { path = "/login", methods = ["POST"] }')
        self.known(m, mp, (*MATCH_KEYS, "status") if statuses else MATCH_KEYS, "match")
        methods = [x.upper() for x in self.strings(m, (*mp, "methods"))]
        for x in methods:
            if x not in _METHODS:
                self.fail((*mp, "methods"), f"unknown HTTP method {x!r}")
        schemes = self.strings(m, (*mp, "scheme"))
        for s in schemes:
            if s not in ("http", "https", "ws", "wss"):
                self.fail((*mp, "scheme"), f"scheme must be http, https, ws or wss, not {s!r}")
        codes: list[int] = []
        if statuses and "status" in m:
            st = m["status"]
            st = [st] if isinstance(st, int) else st
            if not isinstance(st, list) or not all(type(x) is int and 100 <= x <= 599 for x in st):
                self.fail((*mp, "status"), f"'status' must be a list of HTTP status codes, not {m['status']!r}")
            codes = st
        return Match(
            paths=self.paths(m, (*mp, "path")),
            methods=frozenset(methods),
            hosts=tuple(h.lower() for h in self.strings(m, (*mp, "host"))),
            schemes=frozenset(schemes),
            statuses=frozenset(codes),
        )

    # -- sections ----------------------------------------------------------------------------

    def settings(self, t: dict[str, Any]) -> Settings:
        p: _Path = ("ratewarden",)
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
        self, rates: tuple[Rate, ...], algorithm: str, params: dict[str, Any], path: _Path
    ) -> tuple[Window, ...]:
        try:
            wins = tuple(make_window(algorithm, r, **params) for r in rates)
        except ConfigError as exc:
            self.fail(path, str(exc))
        ids = [w.id for w in wins]
        if len(set(ids)) != len(ids):
            self.fail(path, f"two limits would share one state under {algorithm}: use different periods")
        return wins

    def rates(self, value: Any, path: _Path) -> tuple[Rate, ...]:
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

    def rule(self, t: Any, path: _Path, settings: Settings) -> Rule:
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
        )

    def cost(self, v: Any, path: _Path) -> CostSpec:
        if type(v) is int:
            if v < 0:
                self.fail(path, f"cost must be >= 0, not {v}")
            return CostSpec("constant", v)
        if isinstance(v, str):
            for prefix, source in (("response.header:", "response_header"), ("header:", "header")):
                if v.startswith(prefix):
                    h = v[len(prefix) :].strip()
                    if not _HEADER_NAME_RE.match(h):
                        self.fail(path, f"{h!r} is not a valid header name")
                    return CostSpec(source, 1, h.lower())  # type: ignore[arg-type]
        self.fail(path, f"cost must be an integer, 'header:NAME' or 'response.header:NAME', not {v!r}")

    def tiers(self, t: Any, path: _Path, rates: tuple[Rate, ...], algorithm: str, params: dict[str, Any]) -> Tiers:
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

    def ban(self, t: Any, path: _Path) -> Ban:
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
        p: _Path = ("safelist",)
        self.known(t, p, SAFELIST_KEYS, "[safelist]")
        header, secret = "", ""
        if "header_secret" in t:
            hp = (*p, "header_secret")
            hs = self.table(t, hp)
            self.known(hs, hp, ("header", "env", "value"), "header_secret")
            header = self.string(hs, (*hp, "header"))
            if not _HEADER_NAME_RE.match(header):
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
        p: _Path = ("blocklist",)
        self.known(t, p, BLOCKLIST_KEYS, "[blocklist]")
        return Blocklist(self.networks(t, (*p, "ips")), self.paths(t, (*p, "paths")))

    def jwt(self, t: Any) -> JWTConfig:
        p: _Path = ("jwt",)
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

    def load_jwks(self, content: str, path: _Path) -> dict[str, Any]:
        import jwt as pyjwt

        try:
            data = json.loads(content)
            keys = pyjwt.PyJWKSet.from_dict(data).keys
        except Exception as exc:
            self.fail(path, f"not a usable JWKS file: {exc}")
        return {(k.key_id or f"#{i}"): k for i, k in enumerate(keys)}

    def response(self, t: dict[str, Any]) -> ResponseConfig:
        p: _Path = ("response",)
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


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "a table"}.get(
        type(v), type(v).__name__
    )
