"""What every adapter shares, framework-free: the engine it uses, the identity of a user object,
header joining, text that always encodes, and response headers decoded only when read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ratewarden.engine import Engine
from ratewarden.errors import ConfigError

#: identity attributes handed to the engine as ``user_attrs`` (tiers read e.g. ``role``)
USER_ATTRS = ("role", "plan", "tier", "roles", "groups", "scopes")
_ID_NAMES = ("identity", "id", "pk", "user_id", "sub", "username", "email")
_SCALARS = (str, int, float, bool)


def build_engine(policy: Any, engine: Engine | None, options: Mapping[str, Any]) -> Engine:
    """The engine an adapter uses: ``engine`` if given (shared), else ``Engine(policy, **options)``."""
    if engine is not None:
        if options:
            raise ConfigError(f"pass either engine= or engine options ({', '.join(sorted(options))}), not both")
        return engine
    return Engine(policy, **options)


def _attr(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that raises (Starlette's BaseUser.identity) is no identity
        return None


def identity_of(user: object, attrs: Iterable[str] = USER_ATTRS) -> tuple[str | None, dict[str, Any]]:
    """The identity string and attributes of whatever the app put on the request as its user.

    ``None``, an empty string and any object with ``is_authenticated`` false are anonymous.
    A mapping (e.g. JWT claims) gives its ``id``/``sub``/... entry and all its scalar entries;
    an object its ``identity``/``id``/``pk``/``username``... attribute and ``attrs``.
    """
    if user is None or user == "":
        return None, {}
    if isinstance(user, str):
        return user, {}
    if isinstance(user, _SCALARS):
        return str(user), {}
    if isinstance(user, Mapping):
        found = {str(k): v for k, v in user.items() if isinstance(v, (*_SCALARS, list, tuple))}
        for name in _ID_NAMES:
            value = found.get(name)
            if value is not None and value != "":
                return str(value), found
        return None, found
    if _attr(user, "is_authenticated") is False:
        return None, {}
    kinds = (*_SCALARS, list, tuple)
    extra = {name: v for name in attrs if isinstance(v := _attr(user, name), kinds)}  # no managers, methods
    for name in _ID_NAMES:
        value = _attr(user, name)
        if value is not None and value != "" and not callable(value):
            return str(value), extra
    return None, extra


def join_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names; repeated headers joined by ``", "`` (``cookie`` by ``"; "``)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in out:
            out[key] = out[key] + ("; " if key == "cookie" else ", ") + value
        else:
            out[key] = value
    return out


def safe_text(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes) replaced, so it always encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


class LazyHeaders(Mapping[str, str]):
    """Response headers for ``after()``, built (lower-cased, joined) only if the engine reads them:
    most requests have no cost charged after the response, and then nothing is decoded."""

    __slots__ = ("_decoded", "_make")

    def __init__(self, make: Callable[[], dict[str, str]]) -> None:
        self._make = make
        self._decoded: dict[str, str] | None = None

    def _map(self) -> dict[str, str]:
        if self._decoded is None:
            self._decoded = self._make()
        return self._decoded

    def __getitem__(self, key: str) -> str:
        return self._map()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())
