"""The ``ratewarden`` command.

* ``ratewarden simulate RATE`` replays a sequence of requests on a simulated clock and prints,
  for each, whether it passed, what remained and the exact ``retry_after``: a way to see how the
  algorithms differ at window edges (``--algorithm all`` puts them side by side).
* ``ratewarden check FILE`` validates a policy file and prints the rules it understood, or
  every mistake it holds.
* ``ratewarden demo [--port 8000]`` runs a web app with five teams' scenarios on one policy file.
* ``ratewarden --version`` prints the version. ``python -m ratewarden`` is the same command.
* ``ratewarden migrate URL`` creates or upgrades a PostgreSQL store's table and functions.
* ``ratewarden serve --policy FILE`` runs the decision service (see docs/service.md).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import TextIO

from ratewarden import __version__
from ratewarden.clock import FakeClock
from ratewarden.core.algorithms import ALGORITHMS
from ratewarden.core.rates import PERIOD_MAX, US, parse_duration, parse_rates
from ratewarden.errors import RateParseError, RatewardenError
from ratewarden.limiter import Limiter

__all__ = ["main"]

#: simulate's default start: 2026-01-01T00:00:00Z, aligned to every minute, hour and day.
_START = 1_767_225_600.0
_SIM_ALGORITHMS = ["fixed-window", "sliding-window", "sliding-log", "gcra", "token-bucket"]


def _seconds(text: str) -> float:
    """``"0.4"``, ``"2s"``, ``"1m"`` -> seconds, from 0 to ten years (NaN and infinities refused)."""
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text) / US
    if not 0 <= value <= PERIOD_MAX / US:  # also NaN
        raise RateParseError(f"a time must be from 0 to 10 years in seconds, not {text!r}")
    return value


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "never"
    return f"{x:.3f}".rstrip("0").rstrip(".") if x else "0"


def simulate(
    rates: str,
    algorithms: Sequence[str],
    requests: int,
    every: float,
    cost: int = 1,
    offset: float = 0.0,
    out: TextIO | None = None,
) -> None:
    """Print one row per request: time, then allowed / remaining / retry_after per algorithm."""
    out = out or sys.stdout
    parse_rates(rates)  # fail early with the parse error
    clocks = {a: FakeClock(_START + offset) for a in algorithms}
    limiters = {a: Limiter("memory://", algorithm=a, clock=clocks[a]) for a in algorithms}
    passed = dict.fromkeys(algorithms, 0)
    print(f"rate {rates!r}, {requests} requests every {_fmt(every)} s, cost {cost}", file=out)
    if offset:
        print(f"starting {_fmt(offset)} s into an aligned window", file=out)
    head = ["#", "t (s)"]
    for a in algorithms:
        head += [a, "left", "retry_after"]
    rows = [head]
    for i in range(requests):
        row = [str(i + 1), _fmt(round(i * every, 6))]
        for a in algorithms:
            clocks[a].set(_START + offset + i * every)
            d = limiters[a].hit("sim", rates, cost)
            passed[a] += d.allowed
            row += ["pass" if d.allowed else "DENY", str(d.remaining), _fmt(d.retry_after) if not d.allowed else ""]
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    for n, r in enumerate(rows):
        print(
            "  ".join(
                cell.rjust(w) if c < 2 else cell.ljust(w) for c, (cell, w) in enumerate(zip(r, widths, strict=True))
            ),
            file=out,
        )
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
    print("passed: " + ", ".join(f"{a} {passed[a]}/{requests}" for a in algorithms), file=out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratewarden", description="Exact, fast rate limiting.")
    p.add_argument("--version", action="version", version=f"ratewarden {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "simulate",
        help="show which of a sequence of requests pass, on a simulated clock",
        description="Replay requests against a rate on a simulated clock (memory store) and print the decisions.",
    )
    s.add_argument("rate", help='e.g. "5/10s", "5 per 10 minutes;20/hour"')
    s.add_argument(
        "--algorithm",
        "-a",
        default="gcra",
        help=f"one of {', '.join(_SIM_ALGORITHMS)}, or 'all' to compare them side by side (default: gcra)",
    )
    s.add_argument("--requests", "-n", type=int, default=20, help="how many requests (default 20)")
    s.add_argument("--every", "-e", default="0.5s", help="time between requests, e.g. 0.4s, 2s, 1m (default 0.5s)")
    s.add_argument("--cost", type=int, default=1, help="units each request costs (default 1)")
    s.add_argument(
        "--offset", default="0", help="start this far into an aligned window, e.g. 8s, to show edges (default 0)"
    )
    c = sub.add_parser("check", help="validate a policy file and print the rules it understood")
    c.add_argument("file", help="path to ratewarden.toml")
    d = sub.add_parser("demo", help="run a web app with the five teams' scenarios on one policy file")
    d.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    d.add_argument("--profile", default=None, help="policy profile, e.g. 'quick' (save: 2 per 4 s)")
    m = sub.add_parser("migrate", help="create or upgrade a PostgreSQL store's table and functions")
    m.add_argument("url", help="postgresql://user@host:5432/db[?schema=...&table_prefix=...]")
    from ratewarden.service.cli import add_parser as add_serve_parser

    add_serve_parser(sub)
    return p


def _migrate(url: str) -> int:
    """``ratewarden migrate URL``: install or upgrade the PostgreSQL store's objects now."""
    if not url.lower().startswith(("postgresql://", "postgres://")):
        print(f"error: migrate takes a postgresql:// URL, not {url!r}", file=sys.stderr)
        return 2
    from ratewarden.storage.postgres import migrate_url

    found, now = migrate_url(url)
    print(f"schema version {found} -> {now}" if found != now else f"schema version {now}: up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            algos = _SIM_ALGORITHMS if args.algorithm == "all" else [args.algorithm]
            for a in algos:
                if a not in ALGORITHMS or a in ("concurrency", "quota"):
                    print(
                        f"error: simulate takes one of {', '.join(_SIM_ALGORITHMS)} or 'all', not {a!r}",
                        file=sys.stderr,
                    )
                    return 2
            if args.requests < 1 or args.requests > 100_000:
                print("error: --requests must be between 1 and 100000", file=sys.stderr)
                return 2
            if args.cost < 0:
                print("error: --cost must be >= 0", file=sys.stderr)
                return 2
            every = _seconds(args.every)
            offset = _seconds(args.offset)
            if every < 0 or offset < 0:
                print("error: --every and --offset must not be negative", file=sys.stderr)
                return 2
            simulate(args.rate, algos, args.requests, every, args.cost, offset)
            return 0
        if args.command == "demo":
            from ratewarden.demo import serve as run_demo

            run_demo(args.port, args.host, args.profile)
            return 0
        if args.command == "migrate":
            return _migrate(args.url)
        if args.command == "serve":
            from ratewarden.service.cli import run as run_service

            return run_service(args)
        from ratewarden.policy.cli import check_main

        return check_main(args.file)
    except RatewardenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
