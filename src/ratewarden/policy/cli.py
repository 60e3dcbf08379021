"""``ratewarden check FILE``: validate a policy file and print the rules it understood.

Exit status 0 when the file loads, 1 when it does not: every independent mistake is printed,
in line order, as ``error: FILE:LINE: REASON`` (unknown keys with the nearest allowed one).
``RATEWARDEN_PROFILE`` and the other environment overrides apply, as at run time.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ratewarden.policy.load import PolicyError, load_policy
from ratewarden.policy.model import Match, Policy

__all__ = ["check_main", "describe"]


def _match(m: Match) -> str:
    parts: list[str] = []
    if m.methods:
        parts.append("|".join(sorted(m.methods)))
    parts.append(", ".join(m.paths) if m.paths else "any path")
    if m.hosts:
        parts.append("host " + ", ".join(m.hosts))
    if m.schemes:
        parts.append("scheme " + ", ".join(sorted(m.schemes)))
    if m.statuses:
        parts.append("status " + ", ".join(str(s) for s in sorted(m.statuses)))
    return " ".join(parts)


def describe(policy: Policy) -> list[str]:
    """Human-readable lines: the settings, then every rule, ban and list in order."""
    s = policy.settings
    lines = [
        f"policy {policy.source}" + (f" (profile {policy.profile})" if policy.profile else ""),
        f"  storage {s.storage}; headers {s.headers}; on_store_error {s.on_store_error}; algorithm {s.algorithm}",
        f"  trusted_proxies {', '.join(str(n) for n in s.trusted_proxies) or 'none'} via {s.proxy_header}; "
        f"ipv6_prefix /{s.ipv6_prefix}; body_limit {s.body_limit}",
    ]
    if s.exempt:
        lines.append(f"  exempt {', '.join(s.exempt)}")
    sl, bl = policy.safelist, policy.blocklist
    if sl.networks or sl.secret_header or sl.paths:
        bits = [str(n) for n in sl.networks] + [f"path {p}" for p in sl.paths]
        if sl.secret_header:
            bits.append(f"header {sl.secret_header} (secret set)")
        lines.append(f"  safelist {', '.join(bits)}")
    if bl.networks or bl.paths:
        lines.append(f"  blocklist {', '.join([str(n) for n in bl.networks] + [f'path {p}' for p in bl.paths])}")
    if policy.jwt is not None:
        j = policy.jwt
        src = "secret" if j.secret else "JWKS" if j.jwks else "public key"
        lines.append(f"  jwt {', '.join(j.algorithms)} with a {src} from the {j.header} header")
    for i, r in enumerate(policy.rules, start=1):
        extra: list[str] = [r.algorithm]
        if r.cost.source == "constant" and r.cost.value != 1:
            extra.append(f"cost {r.cost.value}")
        elif r.cost.source == "header":
            extra.append(f"cost from request header {r.cost.header}")
        elif r.cost.source == "response_header":
            extra.append(f"cost charged after the response from {r.cost.header}")
        if r.tiers is not None:
            t = r.tiers
            if t.mode == "multiply":
                tiers = ", ".join(f"{k} x{v:g}" for k, v in t.factors.items())
            else:
                tiers = ", ".join(f"{k} {'; '.join(str(w.rate) for w in ws) or 'none'}" for k, ws in t.windows.items())
            extra.append(f"tiers by {t.attr}: {tiers}")
        if r.shadow:
            extra.append("SHADOW (never denies)")
        if r.exempt:
            extra.append(f"except {', '.join(r.exempt)}")
        fb = "skip" if r.fallback is None else str(r.fallback)
        lines.append(
            f"rule {i} {r.name!r}: {_match(r.match)} -> key {r.key} (fallback {fb}) limits {r.limits_text} "
            f"[{'; '.join(extra)}]"
        )
    for i, b in enumerate(policy.bans, start=1):
        what = (
            f"{b.max} responses with {_match(b.match)}"
            if b.mode == "fail2ban"
            else f"{b.max} requests to {_match(b.match)}"
        )
        lines.append(
            f"ban {i} {b.name!r} ({b.mode}): {what} within {b.within_us / 1e6:g}s by {b.key} "
            f"-> banned for {b.ban_for_us / 1e6:g}s" + (" SHADOW" if b.shadow else "")
        )
    lines.append(f"OK: {len(policy.rules)} rule(s), {len(policy.bans)} ban(s)")
    return lines


def check_main(path: str, out: TextIO | None = None) -> int:
    """Validate ``path``; print the rules (exit 0) or every mistake (exit 1) to ``out`` (stdout)."""
    out = out or sys.stdout
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        for e in exc.errors:  # every independent mistake, in line order
            print(f"error: {e.location()}", file=out)
        if len(exc.errors) > 1:
            print(f"{len(exc.errors)} errors", file=out)
        return 1
    for line in describe(policy):
        print(line, file=out)
    return 0
