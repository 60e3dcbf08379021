"""The request/verdict contract: the Protocol adapters rely on is what they call, and Engine keeps it."""

from __future__ import annotations

import re
from pathlib import Path

from rw_recording import RecordingEngine

import ratewarden
from ratewarden.engine import Engine, EngineLike, RequestFacts, Verdict
from ratewarden.engine.contract import EngineLike as ContractEngineLike

POLICY = """
[[rule]]
name = "api"
limits = ["5/minute"]
key = "ip"
"""

ADAPTERS = ("asgi", "wsgi", "flask", "django", "fastapi")


def _members() -> set[str]:
    return {n for n in vars(EngineLike) if not n.startswith("_")} | set(EngineLike.__annotations__)


def test_the_engine_and_a_stand_in_satisfy_the_contract() -> None:
    assert EngineLike is ContractEngineLike
    assert isinstance(Engine(POLICY, storage="memory://"), EngineLike)
    assert isinstance(RecordingEngine(), EngineLike)


def test_an_object_missing_a_call_does_not() -> None:
    class NoAfter:
        body_limit = 1024

        def exempt(self, facts: RequestFacts) -> bool:
            return False

        def check(self, facts: RequestFacts) -> Verdict:
            return Verdict(True)

    assert not isinstance(NoAfter(), EngineLike)


def test_every_engine_call_of_the_adapters_is_in_the_contract() -> None:
    root = Path(ratewarden.__file__).parent
    called: set[str] = set()
    # the adapters, and the helpers they share wherever those live
    files = [root / f"{name}.py" for name in ADAPTERS] + sorted(root.glob("_adapters/**/*.py"))
    for path in files:
        called |= set(re.findall(r"\bengine\.([a-z_]+)\b", path.read_text(encoding="utf-8")))
    assert called, "no adapter calls found: the pattern no longer fits the adapters"
    assert called <= _members(), f"adapters call {sorted(called - _members())} outside EngineLike"
