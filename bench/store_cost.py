"""Deterministic in-process cost of the limiter's and the engine's store paths: run under callgrind.

``python bench/store_cost.py CONFIG N`` runs N calls (after a warm-up of 200) and exits. Under
``valgrind --tool=callgrind`` the instruction counts of a run of N and of a run of 11N differ
only by 10N calls, so ``(Ir(11N) - Ir(N)) / 10N`` is the cost of one call, free of start-up
costs and of the load of a shared machine. ``--measure`` does the subtraction itself::

    python bench/store_cost.py --measure limiter-hit,engine-check --n 20000

CONFIG:

- ``limiter-hit``: ``Limiter("memory://").hit(key, "100/minute")``, gcra, one key;
- ``limiter-hit2``: the same with two windows (``"100/minute;1000/hour"``);
- ``alimiter-hit``: ``AsyncLimiter("memory://")``, as ``limiter-hit``;
- ``engine-check`` / ``engine-acheck``: ``Engine.check`` / ``acheck`` of one request against
  the three-rule policy of ``bench/http/policy.toml`` (memory store, nothing denied);
- ``engine-check-key``: ``Engine.check_key`` of one rule.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = ("limiter-hit", "limiter-hit2", "alimiter-hit", "engine-check", "engine-acheck", "engine-check-key")


def run(config: str, n: int) -> None:
    from ratewarden import AsyncLimiter, Limiter
    from ratewarden.engine import Engine, RequestFacts

    total = n + 200
    if config in ("limiter-hit", "limiter-hit2"):
        lim = Limiter("memory://")
        rate = "100/minute" if config == "limiter-hit" else "100/minute;1000/hour"
        hit = lim.hit
        for _ in range(total):
            hit("user:1", rate)
    elif config == "alimiter-hit":
        alim = AsyncLimiter("memory://")

        async def go() -> None:
            ahit = alim.hit
            for _ in range(total):
                await ahit("user:1", "100/minute")

        asyncio.run(go())
    else:
        engine = Engine(HERE / "http" / "policy.toml", env={})
        facts = RequestFacts("GET", "/", "127.0.0.1", headers={"host": "127.0.0.1:8000"})
        if config == "engine-check":
            check = engine.check
            for _ in range(total):
                check(facts)
        elif config == "engine-check-key":
            for _ in range(total):
                engine.check_key("per-ip-minute", "127.0.0.1")
        else:

            async def ago() -> None:
                acheck = engine.acheck
                for _ in range(total):
                    await acheck(facts)

            asyncio.run(ago())


def instructions(config: str, n: int, python: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, __file__, config, str(n)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if m is None:  # pragma: no cover - valgrind's output changed
            raise RuntimeError(proc.stderr[-2000:])
        return int(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", choices=CONFIGS)
    ap.add_argument("n", nargs="?", type=int, default=1000)
    ap.add_argument("--measure", default="", help="comma-separated configurations: instructions per call")
    ap.add_argument("--n", dest="measure_n", type=int, default=20000)
    args = ap.parse_args(argv)
    if not args.measure:
        if args.config is None:
            ap.error("a configuration, or --measure")
        run(args.config, args.n)
        return 0
    for config in args.measure.split(","):
        n = args.measure_n
        small = instructions(config, n, sys.executable)
        big = instructions(config, 11 * n, sys.executable)
        print(f"{config}: {(big - small) / (10 * n):.0f} instructions per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
