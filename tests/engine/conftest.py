"""Engine tests: a fake clock and a small factory; every engine is closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rw_engine_helpers import MakeEngine

from ratewarden import FakeClock
from ratewarden.engine import Engine
from ratewarden.events import Event


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def make(clock: FakeClock, events: list[Event]) -> Iterator[MakeEngine]:
    made: list[Engine] = []

    def factory(policy: str, **kw: Any) -> Engine:
        kw.setdefault("clock", clock)
        kw.setdefault("env", {})
        kw.setdefault("on_event", events.append)
        e = Engine(policy, **kw)
        made.append(e)
        return e

    yield factory
    for e in made:
        e.close()
