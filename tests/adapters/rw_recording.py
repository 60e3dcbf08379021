"""A recording engine for the adapters' own mechanics (not a model of the real Engine's policy).

The adapters under test are the thing being checked here: what they put in RequestFacts, how
they replay bodies, add headers, send denials and call after(). This engine follows the
interface contract of ``ratewarden.engine`` literally and records every call; the end-to-end
behaviour with the real Engine is tested in ``tests/scenarios``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ratewarden.engine import RequestFacts, Verdict


@dataclass
class RecordingEngine:
    allow: int = 1_000_000  # requests allowed before every later one is denied
    status: int = 429
    body_paths: tuple[str, ...] = ()  # needs_body is True for these paths
    exempt_paths: tuple[str, ...] = ()
    body_limit: int = 1024
    checked: list[RequestFacts] = field(default_factory=list)
    afters: list[tuple[RequestFacts, int, dict[str, str]]] = field(default_factory=list)
    pending: object = True  # None: after() has nothing to do (the contract lets adapters skip it)

    def exempt(self, facts: RequestFacts) -> bool:
        return facts.path in self.exempt_paths

    def needs_body(self, facts: RequestFacts) -> bool:
        return facts.path in self.body_paths

    def check(self, facts: RequestFacts) -> Verdict:
        self.checked.append(facts)
        n = len(self.checked)
        remaining = max(self.allow - n, 0)
        headers = [("RateLimit-Policy", f'"test";q={self.allow};w=60'), ("RateLimit", f'"test";r={remaining};t=60')]
        if n <= self.allow:
            return Verdict(allowed=True, headers=headers, rule="test", pending=self.pending)
        body = json.dumps({"error": "rate_limited", "retry_after": 7}).encode()
        return Verdict(
            allowed=False,
            status=self.status,
            headers=[*headers, ("Retry-After", "7")],
            body=body,
            retry_after=7.0,
            rule="test",
            pending=self.pending,
        )

    async def acheck(self, facts: RequestFacts) -> Verdict:
        return self.check(facts)

    def after(self, facts: RequestFacts, verdict: Verdict, status: int, headers: Mapping[str, str]) -> None:
        self.afters.append((facts, status, dict(headers)))

    async def aafter(self, facts: RequestFacts, verdict: Verdict, status: int, headers: Mapping[str, str]) -> None:
        self.after(facts, verdict, status, headers)
