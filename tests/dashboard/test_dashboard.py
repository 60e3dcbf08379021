"""The dashboard's counts, bounds and routes, on a real engine with a fake clock."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from ratewarden.clock import FakeClock
from ratewarden.dashboard import Dashboard, ObservedEngine
from ratewarden.engine import Engine, RequestFacts
from ratewarden.errors import ConfigError
from ratewarden.events import Event

POLICY = """
[ratewarden]
storage = "memory://"
readable_keys = ["ip"]  # the test reads the denied keys back as they are

[[rule]]
name = "save"
match = { path = "/save" }
key = "ip"
limits = ["2/10 seconds"]

[[rule]]
name = "chat"
match = { path = "/chat" }
key = "ip"
algorithm = "sliding-log"
limits = ["5/10 minutes", "20/hour"]
"""


def _setup(clock: FakeClock, **kw: Any) -> tuple[Engine, Dashboard]:
    dash = Dashboard(clock=clock, **kw)
    return ObservedEngine(POLICY, clock=clock, dashboard=dash), dash


def _hit(engine: Engine, path: str, ip: str = "192.0.2.1") -> bool:
    return engine.check(RequestFacts("POST", path, ip)).allowed


def test_decisions_and_denials_per_rule_per_second(clock: FakeClock) -> None:
    engine, dash = _setup(clock)
    assert [_hit(engine, "/save") for _ in range(5)] == [True, True, False, False, False]
    clock.advance(1)
    assert _hit(engine, "/chat")
    s = dash.state()
    save, chat = s["rules"]["save"], s["rules"]["chat"]
    assert save["last_minute"] == {"decisions": 5, "denied": 3}
    assert (save["admitted"][-2], save["denied"][-2], save["admitted"][-1]) == (2, 3, 0)
    assert chat["last_minute"] == {"decisions": 1, "denied": 0}  # two windows, counted once
    assert len(save["admitted"]) == s["seconds"] == 300
    assert s["top_denied"] == [{"key": "save: ip=192.0.2.1", "denied": 3}]


def test_old_seconds_leave_the_window_and_totals_stay(clock: FakeClock) -> None:
    engine, dash = _setup(clock, minutes=1)
    for _ in range(4):
        _hit(engine, "/save")
    clock.advance(61)
    s = dash.state()
    assert s["rules"]["save"]["window"] == {"decisions": 0, "denied": 0}
    assert s["rules"]["save"]["total"] == {"admitted": 2, "denied": 2, "shadow": 0}
    assert len(dash._series) == 0  # pruned, not kept


def test_rules_are_listed_before_any_traffic(clock: FakeClock) -> None:
    _engine, dash = _setup(clock)
    assert list(dash.state()["rules"]) == ["save", "chat"]


def test_top_denied_keys_stay_bounded_under_a_flood_of_keys(clock: FakeClock) -> None:
    engine, dash = _setup(clock, top_keys=10)
    for _ in range(602):  # 600 denials: more than 1/10 of all denials, so it must be listed
        _hit(engine, "/save", "198.51.100.7")
    for i in range(2000):
        ip = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        for _ in range(3):
            _hit(engine, "/save", ip)
    assert len(dash._keys.counts) <= 10
    assert dash.state()["top_denied"][0]["key"] == "save: ip=198.51.100.7"


def test_store_errors_make_the_store_unhealthy_for_30_seconds(clock: FakeClock) -> None:
    engine, dash = _setup(clock)
    assert dash.state()["store"]["healthy"] is True
    engine.events.emit(Event("store_error", None, None, "192.0.2.1", "GET", "/", None, detail="ConnectionError()"))
    s = dash.state()["store"]
    assert (s["healthy"], s["errors"], s["detail"]) == (False, 1, "ConnectionError()")
    clock.advance(31)
    assert dash.state()["store"]["healthy"] is True


def test_a_health_check_that_fails_or_raises_shows(clock: FakeClock) -> None:
    def broken() -> bool:
        raise OSError("no route to store")

    assert Dashboard(clock=clock, health=lambda: False).state()["store"]["healthy"] is False
    s = Dashboard(clock=clock, health=broken).state()["store"]
    assert s["healthy"] is False and "no route to store" in s["detail"]


def test_reload_history_newest_first_and_bounded(clock: FakeClock) -> None:
    dash = Dashboard(clock=clock)
    for i in range(60):
        dash.record_reload(i % 2 == 0, f"reload {i}")
    reloads = dash.state()["reloads"]
    assert len(reloads) == 50
    assert reloads[0] == {"at": clock(), "ok": False, "message": "reload 59"}


def test_shadow_denials_are_counted_apart(clock: FakeClock) -> None:
    policy = POLICY.replace('limits = ["2/10 seconds"]', 'limits = ["2/10 seconds"]\nshadow = true')
    dash = Dashboard(clock=clock)
    engine = ObservedEngine(policy, clock=clock, dashboard=dash)
    assert all(_hit(engine, "/save") for _ in range(4))
    total = dash.state()["rules"]["save"]["total"]
    assert total == {"admitted": 0, "denied": 0, "shadow": 2}  # a shadow rule's admissions are not its decisions


def test_close_stops_listening(clock: FakeClock) -> None:
    engine, dash = _setup(clock)
    dash.close()
    for _ in range(4):
        engine.events.emit(Event("throttle", "save", "k", None, "GET", "/", None))
    assert dash.state()["rules"]["save"]["total"]["denied"] == 0


def test_a_detached_engine_is_no_longer_counted(clock: FakeClock) -> None:
    dash = Dashboard(clock=clock)
    old, new = Engine(POLICY, clock=clock), Engine(POLICY, clock=clock)
    detach = dash.attach(old)
    dash.attach(new)
    detach()  # a reload replaced it
    for engine in (old, new):
        for _ in range(3):
            _hit(engine, "/save")
    assert dash.state()["rules"]["save"]["total"]["denied"] == 1


@pytest.mark.parametrize("kw", [{"minutes": 0}, {"minutes": 61}, {"top_keys": 0}])
def test_bad_settings_are_refused(kw: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kw))):
        Dashboard(**kw)  # type: ignore[arg-type]


def test_a_short_admin_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="admin_token"):
        Dashboard().routes("short")


# -- routes ---------------------------------------------------------------------------------------


def _client(dash: Dashboard, token: str | None) -> httpx.AsyncClient:
    app = Starlette(routes=dash.routes(token))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_routes_without_a_token_are_open(clock: FakeClock) -> None:
    _engine, dash = _setup(clock)
    async with _client(dash, None) as c:
        page = await c.get("/dashboard")
        assert page.status_code == 200 and "<canvas" in page.text and "/dashboard/dashboard.js" in page.text
        assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from another site
        assert (await c.get("/dashboard/state")).json()["rules"]["save"]["total"]["denied"] == 0
        assert (await c.get("/dashboard/dashboard.js")).headers["content-type"].startswith("text/javascript")
        assert (await c.get("/dashboard/state?top=x")).status_code == 400


async def test_routes_with_a_token_want_it(clock: FakeClock) -> None:
    _engine, dash = _setup(clock)
    token = "s3cret-admin-token"
    async with _client(dash, token) as c:
        for path in ("/dashboard", "/dashboard/state", "/dashboard/events", "/dashboard/dashboard.js"):
            assert (await c.get(path)).status_code == 401, path
            assert (await c.get(path, headers={"Authorization": "Bearer nope-nope"})).status_code == 403, path
        assert (await c.get("/dashboard/state", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        page = await c.get(f"/dashboard?token={token}")
        assert page.status_code == 200
        assert "httponly" in page.headers["set-cookie"].lower()
        assert (await c.get("/dashboard/state")).status_code == 200  # the cookie the page set


def test_a_caller_that_records_its_decisions_counts_each_once(clock: FakeClock) -> None:
    # the decision service's way: decisions recorded by hand, the engine followed for its keys only
    dash = Dashboard(clock=clock)
    engine = Engine(POLICY, clock=clock)
    dash.attach(engine, decisions=False)
    for _ in range(5):
        v = engine.check_key("save", "alice")
        dash.record_decision("save", v.allowed)
    state = dash.state()
    assert state["rules"]["save"]["total"] == {"admitted": 2, "denied": 3, "shadow": 0}
    assert state["top_denied"] == [{"key": "save: alice", "denied": 3}]
    dash.record_decision("envoy", False, denied_key="10.0.0.1")
    dash.record_decision("envoy", False, shadow=True, denied_key="not-counted")
    state = dash.state()
    assert state["rules"]["envoy"]["total"] == {"admitted": 0, "denied": 1, "shadow": 1}
    assert {"key": "envoy: 10.0.0.1", "denied": 1} in state["top_denied"]
    assert all("not-counted" not in k["key"] for k in state["top_denied"])


async def test_an_async_health_check_is_awaited(clock: FakeClock) -> None:
    async def down() -> bool:
        return False

    dash = Dashboard(clock=clock, health=down)
    assert (await dash.astate())["store"]["healthy"] is False
    async with _client(dash, None) as c:
        assert (await c.get("/dashboard/state")).json()["store"]["healthy"] is False
