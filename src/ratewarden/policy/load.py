"""Load and validate a policy file (docs/policy.md) into :class:`~ratewarden.policy.model.Policy`.

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

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ratewarden.errors import ConfigError
from ratewarden.policy.lines import LineIndex
from ratewarden.policy.model import Ban, Blocklist, KeyPart, Policy, Rule
from ratewarden.policy.reader import KeyPath, PolicyError, parse_key
from ratewarden.policy.sections import Sections

__all__ = ["PolicyError", "load_policy", "loads_policy", "parse_key", "rule_policy"]

TOP_KEYS = ("ratewarden", "rule", "ban", "safelist", "blocklist", "jwt", "response", "profile")
#: environment variables that override a ``[ratewarden]`` setting
_ENV_SETTINGS = (
    ("RATEWARDEN_STORAGE", "storage"),
    ("RATEWARDEN_HEADERS", "headers"),
    ("RATEWARDEN_ON_STORE_ERROR", "on_store_error"),
)
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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


def rule_policy(
    rule: Rule | Mapping[str, Any],
    *,
    base: Policy | None = None,
    env: Mapping[str, str] | None = None,
    source: str = "<route>",
) -> Policy:
    """A policy of one rule for limits written in code (a route's ``@limit``), built without any
    TOML text: ``rule`` is a :class:`Rule` or its spec as values (``{"name": "login", "limits":
    ["5/minute"], "key": "ip"}``, the keys of a ``[[rule]]``), validated by the parsers of the
    policy file. With ``base`` the rule shares its settings, JWT key, safelist and response shape
    (not its rules, bans or blocklist); without, the default settings and the ``RATEWARDEN_*``
    setting overrides of the environment apply. A profile never applies: it overrides the rules
    of a file by name. Raises :class:`PolicyError` (``<route>: reason``)."""
    loader = _Loader("", source, os.environ if env is None else env, None, Path("."))
    return loader.for_rule(rule, base)


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


class _Loader(Sections):
    def __init__(self, text: str, source: str, env: Mapping[str, str], profile: str | None, base_dir: Path) -> None:
        super().__init__(source, LineIndex(text), env, base_dir)
        self.text = text
        self.profile = profile if profile is not None else (env.get("RATEWARDEN_PROFILE") or None)
        #: lines holding an unset ``${VAR}``: the mistakes they cause are not independent ones
        self.unset: set[int] = set()

    def _independent(self) -> list[PolicyError]:
        """The mistakes found, without those an unset variable caused on its own line."""
        unset = "the environment variable "
        return [e for e in self.errors if e.line not in self.unset or e.reason.startswith(unset)] or self.errors

    def load(self) -> Policy:
        try:
            raw = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"at line (\d+)", str(exc))
            raise PolicyError(self.source, int(m.group(1)) if m else 0, f"not valid TOML: {exc}") from None
        self.known(raw, (), TOP_KEYS, "the top level")
        profiled = self.attempt(lambda: self.apply_profile(raw))
        if profiled is None:  # the profile's shape is wrong: what it overrides is unknown
            raise PolicyError.of(self.errors)
        raw = self.substitute(profiled, ())
        settings_raw = self.attempt(lambda: self.table(raw, ("ratewarden",))) or {}
        for var, key in _ENV_SETTINGS:
            if self.env.get(var):
                settings_raw = {**settings_raw, key: self.env[var]}
                self.lines.alias(("ratewarden", key), ("<environment>",))
        first = len(self.errors)
        settings = self.settings(settings_raw)
        for i in range(first, len(self.errors)):
            reason = self.errors[i].reason
            for var, key in _ENV_SETTINGS:
                if self.env.get(var) and reason.startswith((f"'{key}'", key)):
                    self.errors[i] = PolicyError(self.source, 0, f"{reason} (from the environment variable {var})")
        rules: list[Rule] = []
        rules_raw = raw.get("rule", [])
        if not isinstance(rules_raw, list):
            self.report(("rule",), "'rule' must be an array of tables: write [[rule]]")
            rules_raw = []
        for i, r in enumerate(rules_raw):
            rule = self.attempt(lambda r=r, i=i: self.rule(r, ("rule", i), settings))  # type: ignore[misc]
            if rule is not None:
                rules.append(rule)
        self.unique(rules_raw, "rule")
        bans: list[Ban] = []
        bans_raw = raw.get("ban", [])
        if not isinstance(bans_raw, list):
            self.report(("ban",), "'ban' must be an array of tables: write [[ban]]")
            bans_raw = []
        for i, b in enumerate(bans_raw):
            ban = self.attempt(lambda b=b, i=i: self.ban(b, ("ban", i)))  # type: ignore[misc]
            if ban is not None:
                bans.append(ban)
        self.unique(bans_raw, "ban")
        jwt_cfg = self.attempt(lambda: self.jwt(raw["jwt"])) if "jwt" in raw else None
        if "jwt" not in raw:
            for i, r in enumerate(rules_raw):
                if isinstance(r, dict) and any(p.kind == "jwt" for p in _key_parts(r.get("key"))):
                    self.report(
                        ("rule", i, "key"), f"rule {r.get('name')!r} uses a jwt: key but there is no [jwt] table"
                    )
        safelist = self.attempt(lambda: self.safelist(self.table(raw, ("safelist",))))
        blocklist = self.attempt(lambda: self.blocklist(self.table(raw, ("blocklist",))))
        response = self.attempt(lambda: self.response(self.table(raw, ("response",))))
        if self.errors or safelist is None or blocklist is None or response is None:
            raise PolicyError.of(self._independent())
        return Policy(
            settings=settings,
            rules=tuple(rules),
            bans=tuple(bans),
            safelist=safelist,
            blocklist=blocklist,
            jwt=jwt_cfg,
            response=response,
            source=self.source,
            profile=self.profile,
        )

    def for_rule(self, rule: Rule | Mapping[str, Any], base: Policy | None) -> Policy:
        """See :func:`rule_policy`."""
        self.profile = None
        if base is not None:
            settings = base.settings
        else:
            settings = self.settings({key: self.env[var] for var, key in _ENV_SETTINGS if self.env.get(var)})
        if isinstance(rule, Rule):
            built: Rule | None = rule
        elif isinstance(rule, Mapping):
            spec = dict(rule)
            built = self.attempt(lambda: self.rule(spec, ("rule", 0), settings))
            jwt_key = built is not None and any(p.kind == "jwt" for p in built.key.parts)
            if jwt_key and (base is None or base.jwt is None):
                self.report(("rule", 0, "key"), "the rule uses a jwt: key but the policy has no [jwt] table")
        else:
            self.fail((), f"a rule is a Rule or a mapping of [[rule]] keys to values, not {type(rule).__name__}")
        if self.errors or built is None:
            raise PolicyError.of(self.errors)
        if base is None:
            return Policy(settings=settings, rules=(built,), source=self.source)
        return replace(base, rules=(built,), bans=(), blocklist=Blocklist(), source=self.source, profile=None)

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
        base: KeyPath = ("profile", self.profile)
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

    def substitute(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, str):
            if "${" not in value:
                return value

            def repl(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                if name in self.env:
                    return self.env[name]
                if default is not None:
                    return default
                self.report(path, f"the environment variable {name} is not set (referenced as ${{{name}}})")
                self.unset.add(self.lines.line(path))
                return m.group(0)  # left as written; what it causes on this line is not reported

            return _ENV_RE.sub(repl, value)
        if isinstance(value, dict):
            return {k: self.substitute(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, (*path, i)) for i, v in enumerate(value)]
        return value

    # -- helpers -----------------------------------------------------------------------------


def _key_parts(text: object) -> tuple[KeyPart, ...]:
    """The parts of a key spec, or none when it does not parse (reported on its own)."""
    if text is None:
        text = "ip"
    try:
        return parse_key(text).parts  # type: ignore[arg-type]
    except ConfigError:
        return ()
