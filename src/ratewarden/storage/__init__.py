"""Stores, picked by URL: ``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``,
``postgresql://user@host:5432/db``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ratewarden.errors import ConfigError
from ratewarden.storage.base import AsyncStore, Store, as_async, check_store
from ratewarden.storage.memory import DEFAULT_MAX_KEYS, MemoryStore

__all__ = ["AsyncStore", "MemoryStore", "Store", "as_async", "check_store", "open_store"]


def _int_option(value: str, name: str, url: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer in {url!r}, not {value!r}") from None


def open_store(
    url: str, *, clock: Callable[[], float] | None = None, max_keys: int | None = None, **options: Any
) -> Store:
    """Open the store a URL names: the typed contract of :mod:`ratewarden.storage.base` (Redis
    and PostgreSQL stores are also :class:`AsyncStore`). ``clock`` (seconds, float) is for
    memory and SQLite only."""
    if not isinstance(url, str):
        raise ConfigError(f"storage must be a URL string such as 'memory://', not {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "memory":
        extra = set(query) - {"max_keys"}
        if extra:
            raise ConfigError(f"unknown option {sorted(extra)[0]!r} in {url!r} (memory:// takes max_keys)")
        if "max_keys" in query:
            max_keys = _int_option(query["max_keys"], "max_keys", url)
        return MemoryStore(DEFAULT_MAX_KEYS if max_keys is None else max_keys, clock=clock)
    if max_keys is not None:
        raise ConfigError(f"max_keys applies to memory:// only, not to {url!r}")
    if scheme == "sqlite":
        from ratewarden.storage.sqlite import SQLiteStore

        return SQLiteStore.from_url(url, clock=clock, **options)
    if scheme in ("redis", "rediss", "redis+cluster", "redis+sentinel", "unix"):
        try:
            from ratewarden.storage.redis import open_redis  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(f"{url!r} needs the Redis store: pip install 'ratewarden[redis]' ({exc})") from None
        return open_redis(url, **options)
    if scheme in ("postgresql", "postgres"):
        try:
            from ratewarden.storage.postgres import open_postgres
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                f"{url!r} needs the PostgreSQL store: pip install 'ratewarden[postgres]' ({exc})"
            ) from None
        return open_postgres(url, **options)
    raise ConfigError(
        f"unknown storage {url!r}; use memory://, sqlite:///path.db, redis://host:port/db, "
        "redis+cluster://host:port, redis+sentinel://host:port/service or postgresql://user@host:5432/db"
    )


if TYPE_CHECKING:  # mypy proves every store satisfies the contract (docs/design.md#the-store-contract)
    from ratewarden.storage.postgres._store import PostgresStore
    from ratewarden.storage.redis._store import RedisStore
    from ratewarden.storage.sqlite import SQLiteStore

    _STORES: tuple[type[Store], ...] = (MemoryStore, SQLiteStore, RedisStore, PostgresStore)
    _ASYNC_STORES: tuple[type[AsyncStore], ...] = (RedisStore, PostgresStore)
