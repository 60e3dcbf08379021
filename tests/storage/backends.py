"""The one list of backends the storage suites are parametrised over, and their fixtures.

Each :class:`Backend` builds a real :class:`~ratewarden.Limiter` / :class:`~ratewarden.AsyncLimiter`
on a real store. To add a backend, append an entry to :data:`BACKENDS` *above the fixtures* (their
parameters are read from the list when this module is imported); every test that uses the
``backend``, ``limiter``, ``alimiter``, ``make_limiter`` or ``make_alimiter`` fixtures runs on it.

Flags a suite adapts to:

* ``injectable_clock``: the store reads time from the ``clock`` it is given. False for stores
  that take time from the server (Redis ``TIME``): tests that move a fake clock call
  :func:`needs_fake_clock`, which skips them there.
* ``shared``: two limiters made in one test see the same state (a SQLite file, a Redis
  database); False for ``memory://``, where each limiter has a store of its own.
* ``persistent``: state survives closing every limiter and opening a new one.

Test modules take the fixtures they use by assignment (an import would trip ruff's F401/F811)::

    from . import backends

    backend = backends.backend
    limiter = backends.limiter
"""

from __future__ import annotations

import atexit
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import rw_redis
from ratewarden import AsyncLimiter, FakeClock, Limiter

__all__ = [
    "BACKENDS",
    "Backend",
    "alimiter",
    "backend",
    "limiter",
    "make_alimiter",
    "make_limiter",
    "needs_fake_clock",
    "sqlite_url",
]


@dataclass(frozen=True)
class Backend:
    """One store to run the suites on. ``sync``/``async_`` take ``(clock, tmp_path, **options)``
    (``options`` go to the limiter: ``algorithm``, ``on_store_error``, ...)."""

    name: str
    sync: Callable[..., Limiter]
    async_: Callable[..., AsyncLimiter]
    injectable_clock: bool = True
    shared: bool = False
    persistent: bool = False
    #: pytest marks for every test on this backend (e.g. ``pytest.mark.redis``)
    marks: tuple[Any, ...] = ()
    #: called with each limiter (sync or async) the fixtures made, before it is closed
    teardown: Callable[[Any], None] | None = field(default=None)


def sqlite_url(tmp_path: Path, name: str = "rw.db") -> str:
    """``sqlite:////abs/tmp/path/rw.db``: a real file under the test's ``tmp_path``."""
    return f"sqlite:///{tmp_path / name}"


def _memory(clock: FakeClock | None, tmp_path: Path, **options: Any) -> Limiter:
    return Limiter("memory://", clock=clock, **options)


def _amemory(clock: FakeClock | None, tmp_path: Path, **options: Any) -> AsyncLimiter:
    return AsyncLimiter("memory://", clock=clock, **options)


def _sqlite(clock: FakeClock | None, tmp_path: Path, **options: Any) -> Limiter:
    return Limiter(sqlite_url(tmp_path), clock=clock, **options)


def _asqlite(clock: FakeClock | None, tmp_path: Path, **options: Any) -> AsyncLimiter:
    return AsyncLimiter(sqlite_url(tmp_path), clock=clock, **options)


BACKENDS: list[Backend] = [
    Backend("memory", _memory, _amemory),
    Backend("sqlite", _sqlite, _asqlite, shared=True, persistent=True),
]


# -- redis (added by the Redis store engineer; placed before the fixtures, which read BACKENDS) --
#
# The shared test Redis (rw_redis.URL: RATEWARDEN_TEST_REDIS_URL). The fake clock reaches the scripts through the
# store's test hook (``_test_now``: the script uses the given time instead of Redis TIME), so the
# clock-moving tests run here too. Every limiter's prefix is namespaced under one prefix per test
# (from ``tmp_path``), so two limiters of one test share state and tests never see each other's keys.

REDIS_TEST_URL = rw_redis.URL


def _redis_options(clock: FakeClock | None, tmp_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    import hashlib

    test = hashlib.blake2b(str(tmp_path).encode(), digest_size=6).hexdigest()
    prefix = options.pop("key_prefix", "rw:")
    if isinstance(prefix, str):
        prefix = f"rwtest:{test}:{prefix}"
    return {"key_prefix": prefix, "_test_now": clock, "timeout": 2.0, **options}


def _redis(clock: FakeClock | None, tmp_path: Path, **options: Any) -> Limiter:
    return Limiter(REDIS_TEST_URL, clock=clock, **_redis_options(clock, tmp_path, options))


def _aredis(clock: FakeClock | None, tmp_path: Path, **options: Any) -> AsyncLimiter:
    return AsyncLimiter(REDIS_TEST_URL, clock=clock, **_redis_options(clock, tmp_path, options))


def _redis_teardown(lim: Any) -> None:
    rw_redis.delete_prefix(lim.store.codec.prefix, REDIS_TEST_URL)


BACKENDS.append(
    Backend(
        "redis",
        _redis,
        _aredis,
        shared=True,
        persistent=True,
        marks=(pytest.mark.redis,),
        teardown=_redis_teardown,
    )
)


# -- postgres (added by the PostgreSQL store engineer; before the fixtures, which read BACKENDS) --
#
# The real PostgreSQL at 127.0.0.1:5432, database "test", in a schema of this test run's own
# (dropped when the run ends). The fake clock reaches the functions through the store's test
# hook (``_test_now``), as for Redis; each test's limiters share one key prefix (from ``tmp_path``).

PG_URL = "postgresql://root@127.0.0.1:5432/test"
PG_SCHEMA = f"rwtest_{uuid.uuid4().hex[:10]}"


def _drop_pg_schema() -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE')


@pytest.fixture(scope="module", name="conn")
def pg_conn() -> Iterator[Any]:
    """``conn``: an autocommit connection to the test database for a module of PostgreSQL tests
    (``conn = backends.pg_conn`` in the module); the run's schema is dropped after it."""
    import psycopg

    c = psycopg.connect(PG_URL, autocommit=True)
    yield c
    c.close()
    _drop_pg_schema()


def _pg_options(clock: FakeClock | None, tmp_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    import hashlib

    test = hashlib.blake2b(str(tmp_path).encode(), digest_size=6).hexdigest()
    prefix = options.pop("key_prefix", "rw:")
    if isinstance(prefix, str):
        prefix = f"rwtest:{test}:{prefix}"
    if not _PG_DROP:
        _PG_DROP.append(atexit.register(_drop_pg_schema))
    return {"key_prefix": prefix, "_test_now": clock, "schema": PG_SCHEMA, "statement_timeout": 10, **options}


_PG_DROP: list[Any] = []


def _postgres(clock: FakeClock | None, tmp_path: Path, **options: Any) -> Limiter:
    return Limiter(PG_URL, clock=clock, **_pg_options(clock, tmp_path, options))


def _apostgres(clock: FakeClock | None, tmp_path: Path, **options: Any) -> AsyncLimiter:
    return AsyncLimiter(PG_URL, clock=clock, **_pg_options(clock, tmp_path, options))


def _postgres_teardown(lim: Any) -> None:
    import psycopg

    store = lim.store
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for table in (store.names.state, f"{store.names.s}log", f"{store.names.s}lease"):
            conn.execute(f"DELETE FROM {table} WHERE starts_with(key, %s)", (store.key_prefix,))


BACKENDS.append(
    Backend(
        "postgres",
        _postgres,
        _apostgres,
        shared=True,
        persistent=True,
        marks=(pytest.mark.postgres,),
        teardown=_postgres_teardown,
    )
)


def needs_fake_clock(backend: Backend) -> None:
    """Skip the calling test on a backend whose time cannot be injected."""
    if not backend.injectable_clock:
        pytest.skip(f"{backend.name} takes time from the server; this test moves a fake clock")


def _params() -> list[Any]:
    return [pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS]


@pytest.fixture(params=_params())
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    return b


@pytest.fixture
def make_limiter(backend: Backend, clock: FakeClock, tmp_path: Path) -> Iterator[Callable[..., Limiter]]:
    """A factory of limiters on ``backend`` (the test's fake clock, the test's files); all closed after."""
    made: list[Limiter] = []

    def make(**options: Any) -> Limiter:
        lim = backend.sync(clock, tmp_path, **options)
        made.append(lim)
        return lim

    yield make
    for lim in made:
        if backend.teardown is not None:
            backend.teardown(lim)
        lim.close()


@pytest.fixture
def limiter(make_limiter: Callable[..., Limiter]) -> Limiter:
    return make_limiter()


@pytest.fixture
async def make_alimiter(
    backend: Backend, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Callable[..., AsyncLimiter]]:
    made: list[AsyncLimiter] = []

    def make(**options: Any) -> AsyncLimiter:
        lim = backend.async_(clock, tmp_path, **options)
        made.append(lim)
        return lim

    yield make
    for lim in made:
        if backend.teardown is not None:
            backend.teardown(lim)
        await lim.aclose()


@pytest.fixture
async def alimiter(make_alimiter: Callable[..., AsyncLimiter]) -> AsyncLimiter:
    return make_alimiter()
