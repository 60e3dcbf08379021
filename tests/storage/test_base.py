"""The typed store contract and the one runner (docs/design.md#the-store-contract).

Every store satisfies :class:`ratewarden.storage.base.Store` (and the Redis and PostgreSQL stores
:class:`AsyncStore`); a user's own store that satisfies it works everywhere a URL does; anything
else is refused with a ConfigError naming what it lacks. No caller asks a store what it can do
at run time (a grep of the source keeps it so), and every store call goes through
:class:`ratewarden.runner.Runner`, which applies each item's ``on_store_error``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ratewarden import AsyncLimiter, ConfigError, FakeClock, Limiter
from ratewarden.core.algorithms import make_window
from ratewarden.core.algorithms.base import Outcome, Window
from ratewarden.core.evaluate import Op
from ratewarden.core.rates import parse_rates
from ratewarden.engine import Engine, RequestFacts
from ratewarden.errors import StoreError
from ratewarden.runner import Fallback, Runner, failure
from ratewarden.storage import open_store
from ratewarden.storage.base import AsyncStore, DirectAsync, Item, Store, ThreadedAsync, as_async
from ratewarden.storage.memory import MemoryStore

SRC = Path(__file__).resolve().parents[2] / "src" / "ratewarden"
CALLERS = ["limiter.py", "runner.py", "metrics.py", "dashboard.py", "engine", "service"]
PROBING = re.compile(
    r"hasattr\("
    r"|getattr\([^)]*store"
    r"|getattr\([^)]*[\"'](kind|blocking|shared|aapply|ahit1|areset|aclose|hitn|hit1|check_window)[\"']"
    r"|store\w*\.kind\s*[!=]="
    r"|[!=]=\s*[\"'](memory|sqlite|redis|postgres)[\"']"
)


def _sources() -> list[Path]:
    out: list[Path] = []
    for name in CALLERS:
        p = SRC / name
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def test_no_caller_probes_a_store_at_run_time() -> None:
    """What a store can do is its type (Store / AsyncStore members), never a hasattr/getattr or a
    comparison of its kind; ``store.kind`` may only be shown as a label."""
    found = []
    for path in _sources():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if PROBING.search(code):
                found.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not found, "store capability probing:\n" + "\n".join(found)


def test_the_probe_grep_would_catch_the_old_code() -> None:
    old = [
        'self._inline = not hasattr(store, "aapply") and getattr(store, "kind", "") == "memory"',
        'check = getattr(self._store, "check_window", None)',
        'elif store.kind == "memory":',
    ]
    assert all(PROBING.search(line) for line in old)


def test_every_store_satisfies_the_contract(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    pytest.importorskip("psycopg")
    memory = open_store("memory://")
    sqlite = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    redis = open_store("redis://127.0.0.1:6379/0")  # nothing connects before the first call
    cluster = open_store("redis+cluster://127.0.0.1:7000")
    postgres = open_store("postgresql://root@127.0.0.1:5432/test")
    try:
        for store in (memory, sqlite, redis, cluster, postgres):
            assert isinstance(store, Store), store
            assert isinstance(store.kind, str) and isinstance(store.blocking, bool)
            assert isinstance(store.shared, bool)
        assert not memory.blocking and not memory.shared
        assert sqlite.blocking and sqlite.shared
        for native in (redis, cluster, postgres):
            assert isinstance(native, AsyncStore)
            assert as_async(native) is native
        assert type(as_async(memory)) is DirectAsync
        assert type(as_async(sqlite)) is ThreadedAsync
    finally:
        for store in (memory, sqlite, redis, cluster, postgres):
            store.close()


class UserStore:
    """A user's own store: the contract, over a memory store; ``down`` makes it fail."""

    kind = "mine"
    blocking = True
    shared = False
    may_fail = True

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreError("my store is down")

    def hit1(self, key: str, window: Window, cost: int) -> Outcome:
        self._check()
        return self.inner.hit1(key, window, cost)

    def apply(self, op: Op, items: Sequence[Item], arg: str = "") -> list[Outcome]:
        self._check()
        return self.inner.apply(op, items, arg)

    def reset(self, key: str, windows: Sequence[Window] | None = None) -> None:
        self._check()
        self.inner.reset(key, windows)

    def check_window(self, window: Window) -> None:
        pass

    def close(self) -> None:
        pass


async def test_a_users_store_works_in_both_limiters_and_the_engine(clock: FakeClock) -> None:
    store = UserStore(clock)
    lim = Limiter(store)
    assert lim.storage_url == "mine://"
    assert [lim.hit("k", "2/minute").allowed for _ in range(3)] == [True, True, False]
    alim = AsyncLimiter(store)  # blocking: a worker thread per call
    assert not (await alim.hit("k", "2/minute")).allowed
    assert (await alim.hit("k2", "2/minute;5/hour")).allowed
    engine = Engine('[[rule]]\nname = "all"\nlimits = ["1/minute"]\n', storage=store, env={}, clock=clock)
    facts = RequestFacts("GET", "/", "198.51.100.7")
    assert engine.check(facts).allowed and not (await engine.acheck(facts)).allowed
    assert not engine._inline and store.calls == 7


@pytest.mark.parametrize("thing", [object(), 42, {"kind": "memory"}, MemoryStore.hit1])
def test_anything_else_is_refused_clearly(thing: object, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match=r"a store .*see ratewarden\.storage\.Store"):
        Limiter(thing)
    with pytest.raises(ConfigError, match="a store"):
        AsyncLimiter(thing)
    with pytest.raises(ConfigError, match="a store"):
        Engine('[[rule]]\nname = "all"\nlimits = ["1/minute"]\n', storage=thing, env={})


def test_the_refusal_names_the_missing_members() -> None:
    class Half:
        kind = "half"

        def apply(self, op: str, items: Any, arg: str = "") -> list[Any]:
            return []

    with pytest.raises(ConfigError, match="it has no blocking, shared, may_fail, hit1, reset, check_window, close"):
        Limiter(Half())


def test_the_runner_decides_each_item_by_its_mode_and_logs_an_outage_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = UserStore(clock)
    w = make_window("fixed-window", parse_rates("2/minute")[0])
    runner = Runner(store, mode="allow", local=MemoryStore(clock=clock), deny_retry_after=2.5, label="mine")
    items: list[Item] = [("a", w, 1), ("b", w, 1), ("c", w, 1)]
    modes = ["allow", "deny", "local"]
    assert failure(runner.run("hit", items, modes)) is None
    store.down = True
    with caplog.at_level(logging.INFO, logger="ratewarden"):
        outs = [runner.run("hit", items, modes) for _ in range(3)]
        assert runner.run("peek", items, modes)[1][0]  # deny refuses hits and leases only
        store.down = False
        assert failure(runner.run("hit", items, modes)) is None
    first = outs[0]
    assert type(first) is Fallback and isinstance(failure(first), StoreError)
    assert first[0] == (True, 2, 0, 0, None)
    assert first[1] == (False, 0, 2_500_000, 2_500_000, "store_error")
    assert [o[2][0] for o in outs] == [True, True, False]  # the local store counts: 2 per minute
    assert runner.store_errors == 4
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [lv for lv, _ in levels] == [logging.WARNING, logging.INFO]
    assert "the store failed (my store is down)" in levels[0][1] and "answers again" in levels[1][1]


async def test_the_async_runner_and_the_limiter_hot_path_fail_the_same(clock: FakeClock) -> None:
    store = UserStore(clock)
    lim, alim = Limiter(store, on_store_error="deny"), AsyncLimiter(store, on_store_error="deny")
    lim.hit("k", "5/minute")
    await alim.hit("k", "5/minute")  # the hot paths' caches are warm
    store.down = True
    for d in (lim.hit("k", "5/minute"), await alim.hit("k", "5/minute"), lim.hit("k", "5/minute;9/hour")):
        assert not d.allowed and d.reason == "store_unavailable" and d.retry_after == 1.0
    assert lim.store_errors == 2 and alim.store_errors == 1
    store.down = False
    assert lim.hit("k", "5/minute").reason is None and (await alim.hit("k", "5/minute")).reason is None
