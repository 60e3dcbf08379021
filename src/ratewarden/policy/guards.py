"""The sections of a policy file that guard and answer: bans, the safelist and blocklist, JWT
verification and the responses; read by :class:`GuardSections`, which ``Sections`` extends."""

from __future__ import annotations

import json
import re
from typing import Any

from ratewarden.core.algorithms.base import Window
from ratewarden.core.algorithms.sliding_log import SlidingLog
from ratewarden.core.algorithms.sliding_window import SlidingWindow
from ratewarden.core.rates import Rate
from ratewarden.policy.model import BODY_VARIABLES, Ban, Blocklist, JWTConfig, ResponseConfig, Safelist
from ratewarden.policy.reader import HEADER_NAME_RE, KeyPath, PolicyError, Reader, did_you_mean, show_value

__all__ = ["BAN_KEYS", "BLOCKLIST_KEYS", "JWT_KEYS", "RESPONSE_KEYS", "SAFELIST_KEYS", "GuardSections"]

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
_BODY_PRESETS: dict[str, dict[str, str]] = {
    "default": dict(ResponseConfig().body),
    "minimal": {"error": "code", "retry_after": "retry_after"},
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}$")


class GuardSections(Reader):
    """Validates the bans, lists, JWT and response sections into their model dataclasses."""

    def name(self, t: dict[str, Any], path: KeyPath, what: str) -> str:
        name = self.string(t, (*path, "name"))
        if not _NAME_RE.match(name):
            self.fail(
                (*path, "name"), f"a {what} name is 1-64 letters, digits, '_', '-', '.', ':' or '/', not {name!r:.80}"
            )
        return name

    def ban(self, t: Any, path: KeyPath) -> Ban | None:
        """One ``[[ban]]``; None when it has mistakes (each independent one is reported)."""
        if not isinstance(t, dict):
            self.fail(path, "each [[ban]] must be a table")
        start = len(self.errors)
        meant = self.known(t, path, BAN_KEYS, "[[ban]]")  # a misspelt key is not also "missing"
        name = None if "name" in meant and "name" not in t else self.attempt(lambda: self.name(t, path, "ban"))
        label = repr(name) if name is not None else f"#{int(path[-1]) + 1}"
        match = self.attempt(lambda: self.match(t, path, statuses=True))
        mode = None
        if match is not None:
            default_mode = "fail2ban" if match.statuses else "allow2ban"
            mode = self.attempt(lambda: self.choice(t, (*path, "mode"), ("fail2ban", "allow2ban"), default_mode))
            if mode == "fail2ban" and not match.statuses:
                self.report((*path, "match"), "a fail2ban ban needs match.status, the response statuses that count")
        mx = None
        if "max" not in t:
            if "max" not in meant:
                self.report(path, f"ban {label} has no 'max'")
        else:
            mx = self.attempt(lambda: self.integer(t, (*path, "max"), 1, 1, 1_000_000))
        within, ban_for = (
            None if k in meant and k not in t else self.attempt(lambda k=k: self.duration(t, (*path, k)))  # type: ignore[misc]
            for k in ("within", "ban_for")
        )
        key = self.attempt(lambda: self.key(t, (*path, "key"), "ip"))
        fallback = self.attempt(lambda: (self.fallback(t, (*path, "fallback")),))
        shadow = self.attempt(lambda: self.boolean(t, (*path, "shadow")))
        if (
            len(self.errors) > start
            or name is None
            or match is None
            or mode is None
            or mx is None
            or within is None
            or ban_for is None
            or key is None
            or fallback is None
            or shadow is None
        ):
            return None
        counter: Window = SlidingLog(Rate(mx, within)) if mx <= 1000 else SlidingWindow(Rate(mx, within))
        return Ban(
            name=name,
            match=match,
            key=key,
            fallback=fallback[0],
            mode=mode,  # type: ignore[arg-type]
            max=mx,
            within_us=within,
            ban_for_us=ban_for,
            counter=counter,
            ban=SlidingLog(Rate(1, ban_for)),
            shadow=shadow,
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
        start = len(self.errors)
        self.known(t, p, JWT_KEYS, "[jwt]")
        # each part is read on its own, so one mistake never hides another in the same table
        source = self.attempt(lambda: self.jwt_key(t, p))
        leeway = self.attempt(lambda: self.seconds(t, (*p, "leeway"), 0, zero=True))
        audience = t.get("audience")
        if audience is not None and not (
            (isinstance(audience, str) and audience)
            or (isinstance(audience, list) and audience and all(isinstance(a, str) and a for a in audience))
        ):
            self.report(
                (*p, "audience"), f"'audience' must be a string or a list of strings, not {show_value(audience)}"
            )
        issuer = t.get("issuer")
        if issuer is not None and not (isinstance(issuer, str) and issuer):
            self.report((*p, "issuer"), f"'issuer' must be a string, not {show_value(issuer)}")
        header = self.attempt(lambda: self.string(t, (*p, "header"), "authorization").lower())
        cookie = self.attempt(lambda: self.string(t, (*p, "cookie"), ""))
        if len(self.errors) > start or source is None or leeway is None or header is None or cookie is None:
            found = self.errors[start:]  # hand them to the caller, once
            del self.errors[start:]
            raise PolicyError.of(found)
        algorithms, secret, public_key, jwks = source
        return JWTConfig(
            algorithms=algorithms,
            secret=secret,
            public_key=public_key,
            jwks=jwks,
            header=header,
            cookie=cookie,
            audience=tuple(audience) if isinstance(audience, list) else audience,
            issuer=issuer,
            leeway=leeway,
        )

    def jwt_key(self, t: dict[str, Any], p: KeyPath) -> tuple[tuple[str, ...], str, str, dict[str, Any]]:
        """``[jwt]``'s algorithms and its one key source: (algorithms, secret, public key, JWKS)."""
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
        return tuple(algorithms), secret, public_key, jwks

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
            if not isinstance(v, str) or v not in BODY_VARIABLES:
                self.fail(
                    (*p, "body", k),
                    f"unknown body variable {show_value(v)} for {k!r};"
                    f"{did_you_mean(v, sorted(BODY_VARIABLES)) if isinstance(v, str) else ''}"
                    f" use one of {', '.join(sorted(BODY_VARIABLES))}",
                )
        strs = {k: self.string(t, (*p, k), getattr(d, k)) for k in RESPONSE_KEYS if k not in ("status", "body")}
        return ResponseConfig(status=self.integer(t, (*p, "status"), 429, 400, 599), body=dict(body), **strs)
