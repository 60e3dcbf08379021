"""The retrying clients against a real uvicorn protected by the ASGI middleware.

``/pair/*`` allows 2 per 2 seconds per ``X-Test`` key (gcra: a third request right away waits
1 s); ``/hourly/*`` allows 1 per hour. Tests about real waits sleep for real (about a second);
the others inject a sleep that only records, so the server still says no when the retry comes.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import requests

from ratewarden.client import AsyncRetryTransport, RetryAdapter, RetryTransport


class Sleeps:
    """A sleep that records each wait; ``real=True`` also waits it."""

    def __init__(self, real: bool) -> None:
        self.real = real
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            await asyncio.sleep(seconds)


def _session(adapter: RetryAdapter, test_id: str) -> requests.Session:
    s = requests.Session()
    s.mount("http://", adapter)
    s.headers["X-Test"] = test_id
    return s


# -- GET retried to success ------------------------------------------------------------------------


def test_httpx_get_is_retried_to_success(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=True)
    transport = RetryTransport(sleep=sleeps)
    with httpx.Client(base_url=server, transport=transport, headers={"X-Test": test_id}) as client:
        codes = [client.get("/pair/a").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert len(sleeps.waits) == 1  # the third one got a 429 with Retry-After: 1, waited, passed
    assert 1.0 <= sleeps.waits[0] <= 1.1  # Retry-After plus at most 10 % jitter


async def test_async_httpx_get_is_retried_to_success(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=True)
    transport = AsyncRetryTransport(sleep=sleeps.asleep)
    async with httpx.AsyncClient(base_url=server, transport=transport, headers={"X-Test": test_id}) as client:
        codes = [(await client.get("/pair/a")).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert len(sleeps.waits) == 1 and 1.0 <= sleeps.waits[0] <= 1.1


def test_requests_get_is_retried_to_success(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=True)
    with _session(RetryAdapter(sleep=sleeps), test_id) as s:
        codes = [s.get(server + "/pair/a").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert len(sleeps.waits) == 1 and 1.0 <= sleeps.waits[0] <= 1.1


def test_without_the_transport_the_third_get_is_a_429(server: str, test_id: str) -> None:
    """The control: the server really says no to the third request of the tests above."""
    with httpx.Client(base_url=server, headers={"X-Test": test_id}) as client:
        codes = [client.get("/pair/a").status_code for _ in range(3)]
        last = client.get("/pair/a")
    assert codes == [200, 200, 429]
    assert last.headers["retry-after"] == "1"


# -- POST is not retried unless asked --------------------------------------------------------------


def test_httpx_post_is_not_retried_by_default(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=False)
    with httpx.Client(base_url=server, transport=RetryTransport(sleep=sleeps), headers={"X-Test": test_id}) as c:
        codes = [c.post("/pair/a", content=b"x").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert sleeps.waits == []


async def test_async_httpx_post_is_not_retried_by_default(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=False)
    transport = AsyncRetryTransport(sleep=sleeps.asleep)
    async with httpx.AsyncClient(base_url=server, transport=transport, headers={"X-Test": test_id}) as c:
        codes = [(await c.post("/pair/a", content=b"x")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert sleeps.waits == []


def test_requests_post_is_not_retried_by_default(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=False)
    with _session(RetryAdapter(sleep=sleeps), test_id) as s:
        codes = [s.post(server + "/pair/a", data=b"x").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert sleeps.waits == []


def test_post_with_retry_unsafe_is_retried_and_its_body_sent_again(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=True)
    transport = RetryTransport(retry_unsafe=True, sleep=sleeps)
    with httpx.Client(base_url=server, transport=transport, headers={"X-Test": test_id}) as c:
        responses = [c.post("/pair/a", content=b"note %d" % i) for i in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[2].json()["body"] == "note 2"
    assert len(sleeps.waits) == 1


def test_requests_post_with_retry_unsafe_is_retried(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=True)
    with _session(RetryAdapter(retry_unsafe=True, sleep=sleeps), test_id) as s:
        responses = [s.post(server + "/pair/a", data=b"note %d" % i) for i in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[2].json()["body"] == "note 2"


# -- max_wait and max_retries ------------------------------------------------------------------------


def test_a_wait_longer_than_max_wait_is_not_started(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=False)
    transport = RetryTransport(max_wait=5, sleep=sleeps)
    with httpx.Client(base_url=server, transport=transport, headers={"X-Test": test_id}) as c:
        assert c.get("/hourly/a").status_code == 200
        started = time.monotonic()
        r = c.get("/hourly/a")
        took = time.monotonic() - started
    assert r.status_code == 429  # Retry-After: 3600 > max_wait: handed back at once
    assert r.headers["retry-after"] == "3600"
    assert sleeps.waits == []
    assert took < 5


@pytest.mark.parametrize("client_kind", ["httpx", "async", "requests"])
def test_the_sleeps_of_one_request_never_add_up_past_max_wait(server: str, test_id: str, client_kind: str) -> None:
    sleeps = Sleeps(real=False)  # the retry comes at once, so the server says "3600 s" again
    options = {"max_retries": 10, "max_wait": 9000.0, "random": lambda: 0.999}
    codes = _gets(server, test_id, client_kind, sleeps, options, "/hourly/a", 2)
    assert codes == [200, 429]
    assert len(sleeps.waits) == 2  # 3601 + 3601; a third 3600 does not fit the 9000 s budget
    assert sum(sleeps.waits) <= 9000
    assert all(3600 <= w <= 3601 for w in sleeps.waits)  # never earlier than the server said; jitter <= 1 s


@pytest.mark.parametrize("client_kind", ["httpx", "async", "requests"])
def test_when_retries_run_out_the_final_429_is_returned(server: str, test_id: str, client_kind: str) -> None:
    sleeps = Sleeps(real=False)
    options = {"max_retries": 3, "max_wait": 20000.0, "random": lambda: 0.0}
    codes = _gets(server, test_id, client_kind, sleeps, options, "/hourly/a", 2)
    assert codes == [200, 429]
    assert sleeps.waits == [3600.0, 3600.0, 3600.0]


def _gets(
    server: str, test_id: str, kind: str, sleeps: Sleeps, options: dict[str, object], path: str, n: int
) -> list[int]:
    """``n`` GETs of ``path`` through the ``kind`` client; their final status codes."""
    headers = {"X-Test": test_id}
    if kind == "httpx":
        with httpx.Client(base_url=server, transport=RetryTransport(sleep=sleeps, **options), headers=headers) as c:  # type: ignore[arg-type]
            return [c.get(path).status_code for _ in range(n)]
    if kind == "requests":
        with _session(RetryAdapter(sleep=sleeps, **options), test_id) as s:  # type: ignore[arg-type]
            return [s.get(server + path).status_code for _ in range(n)]

    async def run() -> list[int]:
        transport = AsyncRetryTransport(sleep=sleeps.asleep, **options)  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=server, transport=transport, headers=headers) as c:
            return [(await c.get(path)).status_code for _ in range(n)]

    return asyncio.run(run())


# -- waiting up front --------------------------------------------------------------------------------


class Recording(httpx.HTTPTransport):
    """A real transport that notes the status of every response on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.seen.append(response.status_code)
        return response


def test_wait_when_empty_waits_before_sending_instead_of_taking_a_429(server: str, test_id: str) -> None:
    sleeps = Sleeps(real=True)
    inner = Recording()
    transport = RetryTransport(inner, wait_when_empty=True, sleep=sleeps, max_wait=5)
    with httpx.Client(base_url=server, transport=transport, headers={"X-Test": test_id}) as c:
        first = c.get("/pair/a")
        second = c.get("/pair/a")
        third = c.get("/pair/a")
    assert first.headers["ratelimit"] == '"pair";r=1;t=1'
    assert second.headers["ratelimit"] == '"pair";r=0;t=2'
    assert third.status_code == 200
    assert inner.seen == [200, 200, 200]  # no 429 on the wire: it waited first
    assert len(sleeps.waits) == 1 and 1.9 <= sleeps.waits[0] <= 2.0  # t=2 after the second, from then


def test_without_wait_when_empty_the_wire_sees_the_429(server: str, test_id: str) -> None:
    inner = Recording()
    with httpx.Client(base_url=server, transport=RetryTransport(inner), headers={"X-Test": test_id}) as c:
        codes = [c.get("/pair/a").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert inner.seen == [200, 200, 429, 200]
