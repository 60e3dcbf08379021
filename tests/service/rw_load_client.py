"""A client process for the service's load tests: ``python rw_load_client.py N RULE KEY URL...``
sends N checks (round robin over the URLs, keep-alive; N = ``15s`` sends for 15 seconds) and
prints one JSON line: how many were admitted, the statuses seen, and every (time, status,
allowed) when ``--trace`` is given."""

from __future__ import annotations

import json
import sys
import time

import httpx


def main(argv: list[str]) -> None:
    trace = "--trace" in argv
    args = [a for a in argv if a != "--trace"]
    rule, key, urls = args[1], args[2], args[3:]
    until = time.monotonic() + float(args[0][:-1]) if args[0].endswith("s") else None
    n = 10**9 if until is not None else int(args[0])
    clients = [httpx.Client(base_url=u, timeout=5.0) for u in urls]
    allowed = 0
    statuses: dict[str, int] = {}
    events = []
    for i in range(n):
        if until is not None and time.monotonic() > until:
            break
        c = clients[i % len(clients)]
        try:
            r = c.post("/v1/check", json={"rule": rule, "key": key})
            code = r.status_code
            ok = code == 200 and bool(r.json()["allowed"])
        except httpx.HTTPError as exc:
            code, ok = -1, False
            statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
        allowed += ok
        statuses[str(code)] = statuses.get(str(code), 0) + 1
        if trace:
            events.append((time.time(), code, ok))
    print(json.dumps({"allowed": allowed, "statuses": statuses, "events": events}))


if __name__ == "__main__":
    main(sys.argv[1:])
