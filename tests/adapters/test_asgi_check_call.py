"""The ASGI middleware calls ``Engine.check`` directly for an Engine on the memory store (what its
``acheck`` does there), and ``acheck`` for any other engine, including one set after building."""

from __future__ import annotations

from pathlib import Path

from rw_recording import RecordingEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ratewarden.asgi import RateLimitMiddleware
from ratewarden.engine import RequestFacts, Verdict

POLICY = '[ratewarden]\nheaders = "draft"\n[[rule]]\nname = "ip"\nlimits = ["2/minute"]\n'


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/", hello)])


class AsyncOnly(RecordingEngine):
    """A stand-in whose synchronous ``check`` must never be called from the ASGI path."""

    def check(self, facts: RequestFacts) -> Verdict:
        raise AssertionError("the ASGI middleware must call acheck on this engine")

    async def acheck(self, facts: RequestFacts) -> Verdict:
        return RecordingEngine.check(self, facts)


def test_a_memory_engine_decides_through_check_as_through_acheck() -> None:
    mw = RateLimitMiddleware(APP, policy=POLICY, storage="memory://")
    assert mw._sync is mw.engine
    with TestClient(mw) as client:
        codes = [client.get("/").status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_another_store_or_a_stand_in_goes_through_acheck(tmp_path: Path) -> None:
    mw = RateLimitMiddleware(APP, policy=POLICY, storage=f"sqlite:///{tmp_path / 'rl.db'}")
    assert mw._sync is None
    with TestClient(mw) as client:
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
    mw.engine.close()
    stand_in = AsyncOnly(allow=1)
    with TestClient(RateLimitMiddleware(APP, engine=stand_in)) as client:  # type: ignore[arg-type]
        assert [client.get("/").status_code for _ in range(2)] == [200, 429]


def test_an_engine_set_after_building_goes_through_acheck() -> None:
    mw = RateLimitMiddleware(APP, policy=POLICY, storage="memory://")
    mw.engine = AsyncOnly(allow=1)  # type: ignore[assignment]
    with TestClient(mw) as client:
        assert [client.get("/").status_code for _ in range(2)] == [200, 429]


EXEMPT = POLICY.replace('headers = "draft"\n', 'headers = "draft"\nexempt = ["/health"]\n')
BODY = POLICY.replace('name = "ip"\n', 'name = "ip"\nkey = "body:email"\nfallback = "ip"\n')


async def echo_body(request: Request) -> PlainTextResponse:
    return PlainTextResponse(await request.body())


BODY_APP = Starlette(routes=[Route("/", echo_body, methods=["POST"]), Route("/health", hello)])


def _count_calls(mw: RateLimitMiddleware) -> list[str]:
    """The names of the engine's exempt/needs_body calls, recorded on the real engine."""
    calls: list[str] = []
    for name in ("exempt", "needs_body"):
        real = getattr(mw.engine, name)
        setattr(mw.engine, name, lambda facts, real=real, name=name: calls.append(name) or real(facts))
    return calls


def test_a_policy_with_nothing_exempt_and_no_body_key_goes_straight_to_check() -> None:
    """Neither call can be True for such a policy, so the ASGI path skips both (the verdicts as before)."""
    mw = RateLimitMiddleware(APP, policy=POLICY, storage="memory://")
    assert mw._plain is mw.engine
    calls = _count_calls(mw)
    with TestClient(mw) as client:
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
    assert calls == []


def test_exempt_paths_and_body_keys_are_still_asked_for() -> None:
    mw = RateLimitMiddleware(APP, policy=EXEMPT, storage="memory://")
    assert mw._plain is None
    calls = _count_calls(mw)
    with TestClient(mw) as client:
        assert [client.get("/health").status_code for _ in range(3)] == [404, 404, 404]  # exempt: never counted
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
    assert calls.count("exempt") == 6
    mw = RateLimitMiddleware(BODY_APP, policy=BODY, storage="memory://")
    assert mw._plain is None
    with TestClient(mw) as client:
        for who in ("a@x", "a@x", "b@x"):
            r = client.post("/", content=f'{{"email": "{who}"}}', headers={"content-type": "application/json"})
            assert r.status_code == 200 and r.text == f'{{"email": "{who}"}}'  # read for the key, replayed whole
        assert client.post("/", json={"email": "a@x"}).status_code == 429
    mw.engine = AsyncOnly(allow=1, exempt_paths=("/health",))  # type: ignore[assignment]
    with TestClient(mw) as client:
        assert [client.get("/health").status_code for _ in range(2)] == [200, 200]
