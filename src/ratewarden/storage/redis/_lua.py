"""What the sync and async Redis stores share: the script, keys, arguments and replies.

The Lua ports of the core live in ``storage/lua/``, one file per algorithm; :data:`SCRIPT`
composes them at import time into one script (``prelude.lua`` + the algorithms +
``dispatch.lua``), so any mix of algorithms, windows and keys is one ``EVALSHA``.

This module does no I/O: :class:`Codec` turns ``(op, items, arg)`` into the script's
``KEYS``/``ARGV`` and its flat integer reply back into core :data:`Outcome` tuples, and
builds every Redis key name (with a Cluster hash tag, so all windows of one key share a slot).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from ratewarden.clock import to_micros
from ratewarden.core.algorithms import (
    GCRA,
    Concurrency,
    Quota,
    SlidingLog,
    TokenBucket,
    Window,
)
from ratewarden.core.algorithms.base import Outcome
from ratewarden.core.algorithms.sliding_log import Log
from ratewarden.core.evaluate import Op
from ratewarden.errors import ConfigError, StoreError
from ratewarden.storage._specs import CODES, SpecCache
from ratewarden.storage.base import Item

__all__ = [
    "CODES",
    "FILES",
    "SCRIPT",
    "SHA",
    "Codec",
    "decode_state",
    "load_script",
    "log_key",
    "read_state",
    "resp_evalsha",
]

FILES = (
    "prelude.lua",
    "fixed_window.lua",
    "sliding_window.lua",
    "sliding_log.lua",
    "gcra.lua",
    "token_bucket.lua",
    "concurrency.lua",
    "quota.lua",
    "dispatch.lua",
)
_OPS = frozenset({"hit", "peek", "charge", "acquire", "release"})
#: Lua numbers are doubles: integers are exact below this bound.
EXACT = 2**53
_FIELDS = 2  # ARGV fields per item: the window's spec string and the cost
_HEAD = 3  # ARGV fields before the requests: now, ttl slack, number of requests


def load_script() -> str:
    """Compose the package's Lua files into one script: the prelude, each algorithm file inside
    ``if USED[code] then ... end`` (a call builds only the functions it uses), the dispatcher."""
    base = resources.files("ratewarden.storage").joinpath("lua")
    codes = {name.replace("-", "_") + ".lua": code for name, code in CODES.items()}
    parts = []
    for name in FILES:
        text = base.joinpath(name).read_text(encoding="utf-8")
        if name in codes:
            text = f"if USED[{codes[name]}] then\n{text}end\n"
        parts.append(text)
    return "\n".join(parts)


SCRIPT = load_script()
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


_EVALSHA = b"$7\r\nEVALSHA\r\n$40\r\n" + SHA.encode() + b"\r\n"


#: RESP bulk strings of the values sent lately (keys, specs, ops, costs repeat from call to call,
#: and within a merged call): packing a value seen before is one dict look-up
_BULK: dict[Any, bytes] = {}
_BULK_MAX = 4096


def _bulk(x: Any) -> bytes:
    b = x.encode("utf-8", "surrogatepass") if isinstance(x, str) else b"%d" % x
    r = _BULK[x] = b"$%d\r\n%s\r\n" % (len(b), b)
    if len(_BULK) > _BULK_MAX:  # many distinct keys: start again (bounded memory)
        _BULK.clear()
    return r


def resp_evalsha(keys: Sequence[str], args: Sequence[Any]) -> bytes:
    """``EVALSHA SHA n KEYS ARGV`` in RESP, ready to send (redis-py's generic packer costs more
    than the script on a loaded machine: this is the hot path of both faces)."""
    get = _BULK.get
    n = len(keys)
    return b"".join(
        [
            b"*%d\r\n" % (3 + n + len(args)),
            _EVALSHA,
            b"$%d\r\n%d\r\n" % (len(str(n)), n),
            *[get(x) or _bulk(x) for x in keys],
            *[get(x) or _bulk(x) for x in args],
        ]
    )


#: the largest limit and period (microseconds) the scripts decide exactly: limits up to 10^12,
#: periods up to 10 years, with room to spare (every number they hold stays below 2^53, and
#: products beyond it are computed exactly; see prelude.lua)
MAX_LIMIT = 2**50
MAX_PERIOD = 2**50


def _spec(w: Window) -> str:
    """The spec string a non-quota window sends (its parse() in Lua reads it), once Lua can
    compute it exactly: ``"4 T tau burst"`` (gcra), ``"5 limit P burst full"`` (token-bucket),
    ``"code limit P"`` (the others)."""
    code = CODES.get(w.name)
    if code is None:  # pragma: no cover - every core algorithm has a script
        raise ConfigError(f"the Redis store has no script for algorithm {w.name!r}")
    if w.limit >= MAX_LIMIT or w.period >= MAX_PERIOD or getattr(w, "burst", 0) >= MAX_LIMIT:
        raise ConfigError(
            f"{w.name} {w.rate} is beyond what ratewarden decides exactly: limits (and bursts) up to "
            f"{MAX_LIMIT:,}, periods up to {MAX_PERIOD // 1_000_000 // 86_400 // 365} years"
        )
    spec = f"{code} {w.limit} {w.period}"
    if isinstance(w, GCRA):
        spec = f"{code} {w.unit} {w.tau} {w.burst}"
        if w.tau + w.unit >= EXACT:  # a burst far above the limit on a slow rate
            raise ConfigError(
                f"gcra {w.rate} with burst {w.burst} is too large for the Redis store's exact arithmetic "
                "(burst x emission interval must stay below 2^53 microseconds); use token-bucket, which "
                "takes any burst, or a smaller burst"
            )
    elif isinstance(w, TokenBucket):
        spec = f"{code} {w.limit} {w.period} {w.burst} {w.full}"
    return spec


def _tag_key(key: str, max_len: int) -> str:
    """The hash-tagged part of a key: the key itself, or a stable digest of it when it is long,
    empty, would end the hash tag at once (``}...``), or is not valid UTF-8 (lone surrogates)."""
    if 0 < len(key) <= max_len and key[0] != "}":
        if key.isascii():
            return key
        try:
            key.encode()
            return key
        except UnicodeEncodeError:
            pass
    return "#" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _glob_escape(s: str) -> str:
    for ch in "\\*?[]":
        s = s.replace(ch, "\\" + ch)
    return s


class Codec:
    """Keys, arguments and replies of the composed script (shared by sync and async I/O).

    ``now_us`` is the test hook: when given (only by a store created with ``_test_now``),
    the script uses it instead of Redis ``TIME`` and keeps states an hour longer (the real
    clock moves while the injected one stands still). ``clock`` is the client's own notion of
    time, used for nothing but the quota's calendar bounds (see ``quota.lua``).
    """

    __slots__ = ("_specs", "clock", "max_key_length", "now_us", "prefix", "specs")

    def __init__(
        self,
        prefix: str,
        max_key_length: int = 200,
        clock: Callable[[], float] | None = None,
        now_us: Callable[[], int] | None = None,
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigError(f"key_prefix must be a string, not {prefix!r}")
        if isinstance(max_key_length, bool) or not isinstance(max_key_length, int) or max_key_length < 8:
            raise ConfigError(f"max_key_length must be an integer >= 8, not {max_key_length!r}")
        self.prefix = prefix
        self.max_key_length = max_key_length
        self.clock = clock or time.time
        self.now_us = now_us
        self.specs = SpecCache(_spec)
        self._specs = self.specs.by_window  # read directly by pack1

    # -- keys ---------------------------------------------------------------------------------

    def base(self, key: str) -> str:
        """``prefix{key}:`` -- every window of ``key`` lives under it, in one Cluster slot."""
        return f"{self.prefix}{{{_tag_key(key, self.max_key_length)}}}:"

    def state_key(self, key: str, w: Window) -> str:
        return f"{self.prefix}{{{_tag_key(key, self.max_key_length)}}}:{w.id}"

    def state_keys(self, key: str, w: Window) -> list[str]:
        """Every Redis key a window of ``key`` uses (a sliding log has its sorted set too)."""
        k = self.state_key(key, w)
        if isinstance(w, Concurrency):  # and the bit sets :b0 .. :b49 (costs below 2^50)
            return [k, k + ":z", k + ":h", *(f"{k}:b{i}" for i in range(50))]
        return [k, log_key(k)] if isinstance(w, SlidingLog) else [k]

    def pattern(self, key: str) -> str:
        """SCAN pattern matching every window of ``key`` (for ``reset(key)`` without windows)."""
        return _glob_escape(self.base(key)) + "*"

    # -- arguments ----------------------------------------------------------------------------

    def spec(self, w: Window, client_now: int) -> str:
        """The window's spec string (cached; a quota's holds the calendar bounds around now)."""
        return self.specs.get(w, client_now)

    def pack(self, op: Op, items: Sequence[Item], arg: str = "") -> tuple[list[str], list[Any]]:
        """``(KEYS, ARGV)`` of one script call over ``items``."""
        if op not in _OPS:
            raise ValueError(f"unknown operation {op!r}")
        if arg and (arg.split() != [arg] or arg == "-"):
            raise ConfigError(f"a lease id must be a non-empty word without whitespace, not {arg!r}")
        test_now = self.now_us() if self.now_us is not None else None
        client_now = test_now if test_now is not None else to_micros(self.clock())
        keys: list[str] = []
        args: list[Any] = ["" if test_now is None else test_now, 0 if test_now is None else 3_600_000]
        args += (1, op, arg, len(items))
        prefix, max_len = self.prefix, self.max_key_length
        for key, w, cost in items:
            if op == "charge" and isinstance(w, Concurrency):
                w.charge(None, client_now, cost)  # raises what the core raises (no charge of a lease)
            tag = key if 0 < len(key) <= max_len and key[0] != "}" and key.isascii() else _tag_key(key, max_len)
            keys.append(f"{prefix}{{{tag}}}:{w.id}")
            args.append(self.spec(w, client_now))
            args.append(cost)
        return keys, args

    def pack1(self, key: str, w: Window, cost: int) -> tuple[list[str], list[Any]]:
        """:meth:`pack` of one ``hit`` (the hot path, kept short)."""
        if self.now_us is not None or isinstance(w, Quota):
            return self.pack("hit", ((key, w, cost),))
        s = self._specs.get((w.id, w.limit, w.period, getattr(w, "burst", 0)))
        if s is None:
            s = self.spec(w, 0)
        max_len = self.max_key_length
        tag = key if 0 < len(key) <= max_len and key[0] != "}" and key.isascii() else _tag_key(key, max_len)
        return [f"{self.prefix}{{{tag}}}:{w.id}"], ["", 0, 1, "hit", "", 1, s, cost]

    @staticmethod
    def merge(calls: Sequence[tuple[list[str], list[Any]]]) -> tuple[list[str], list[Any]]:
        """Several packed calls (same ``now``) as ONE script call: the script runs them one after
        the other, each all-or-nothing, and replies with their outcomes in order."""
        keys: list[str] = []
        heads: list[Any] = []
        items: list[Any] = []
        for k, a in calls:
            keys += k
            heads += a[_HEAD : _HEAD + 3]
            items += a[_HEAD + 3 :]
        first = calls[0][1]
        return keys, [first[0], first[1], len(calls), *heads, *items]

    @staticmethod
    def parse(reply: Any, n: int) -> list[Outcome]:
        """The script's flat reply -> one Outcome per item (``new_state`` is not sent back: None)."""
        if not isinstance(reply, list) or len(reply) != 4 * n:
            raise StoreError(f"unexpected reply from the ratewarden script: {reply!r:.200}")
        return [(reply[i] == 1, reply[i + 1], reply[i + 2], reply[i + 3], None) for i in range(0, 4 * n, 4)]


def log_key(state_key: str) -> str:
    """The sorted set holding a sliding-log window's entries (beside its state key, same slot)."""
    return state_key + ":log"


def decode_state(w: Window, raw: bytes | str | None, log: Sequence[bytes | str] = ()) -> Any:
    """A stored state string -> the value the Python core uses (for tests and inspection).

    A sliding-log state is its header ``"L total last base skip"`` plus ``log``, the members of its
    sorted set in order (``ZRANGE key:log 0 -1``); a concurrency state ``"Z2"`` (or ``"Z"``) is its
    sorted set's ``(member, score)`` pairs (``ZRANGE key:z 0 -1 WITHSCORES``) past the hash's
    ``" cut"`` (the leases at or below it are dropped ones not yet removed): :func:`read_state`
    fetches them."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    if isinstance(w, SlidingLog) and text.startswith("L "):
        head = text.split()
        base, skip = int(head[3]), int(head[4])
        entries = []
        for i, m in enumerate(log):
            t, cum = (m.decode() if isinstance(m, bytes) else m).split()
            if i >= skip:
                entries.append((int(t), int(cum) - base))
            base = int(cum)
        return Log.of(entries)
    parts = text.split()
    if isinstance(w, GCRA):
        return int(parts[0])
    if isinstance(w, Concurrency) and text in ("Z", "Z2"):  # log: ZRANGE key:z 0 -1 WITHSCORES
        held = []
        pairs: Sequence[Any] = log
        for m, score in pairs:
            lease, cost, _ = (m.decode() if isinstance(m, bytes) else m).split()
            held.append((int(score), "" if lease == "-" else lease, int(cost)))
        return tuple(sorted(held)) or None
    if isinstance(w, Concurrency):
        leases = [
            (int(parts[i]), "" if parts[i + 1] == "-" else parts[i + 1], int(parts[i + 2]))
            for i in range(0, len(parts), 3)
        ]
        return tuple(leases)
    nums = [int(x) for x in parts]
    if isinstance(w, Quota):
        return (nums[0], nums[1])  # "start used end": the end is the script's, not the core's
    if isinstance(w, SlidingLog):
        return Log.of((nums[i], nums[i + 1]) for i in range(0, len(nums), 2))
    if isinstance(w, TokenBucket) and len(nums) == 3:  # "tokens frac last" (a big bucket)
        return (nums[0] * w.period + nums[1], nums[2])
    return tuple(nums)


def read_state(client: Any, codec: Codec, key: str, w: Window) -> Any:
    """The state of ``key`` in window ``w``, read with a sync redis-py ``client`` (for tests
    and inspection; not atomic)."""
    k = codec.state_key(key, w)
    raw = client.get(k)
    log: Any = []
    if isinstance(w, SlidingLog) and raw is not None:
        log = client.zrange(log_key(k), 0, -1)
    elif isinstance(w, Concurrency) and raw is not None:
        cut = int(client.hget(k + ":h", " cut") or 0)  # at or below: dropped, not yet removed
        log = [(m, s) for m, s in client.zrange(k + ":z", 0, -1, withscores=True) if s > cut]
    return decode_state(w, raw, log)
