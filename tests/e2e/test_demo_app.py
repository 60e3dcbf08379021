"""The demo app without a browser: the five teams' limits on its one policy, and the command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from ratewarden.cli import main
from ratewarden.demo import POLICY, create_app
from ratewarden.policy.cli import check_main


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app()
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as c:
        yield c


def test_the_shipped_policy_passes_check() -> None:
    assert check_main(POLICY) == 0


async def test_the_page_and_the_helper_and_a_session_cookie(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and 'from "/ratewarden.js"' in page.text
    assert "sid=" in page.headers["set-cookie"]
    js = await client.get("/ratewarden.js")
    assert js.headers["content-type"].startswith("text/javascript") and "export function protect" in js.text
    assert (await client.get("/dashboard")).status_code == 200


async def test_save_chat_two_per_ten_seconds_with_the_default_body(client: httpx.AsyncClient) -> None:
    codes = [(await client.post("/api/v1/chat/save", json={})).status_code for _ in range(2)]
    denied = await client.post("/api/v1/chat/save", json={})
    assert codes == [200, 200] and denied.status_code == 429
    body = denied.json()
    assert (body["error"], body["rule"], body["limit"], body["remaining"]) == ("rate_limited", "save_chat", 2, 0)
    assert body["retry_after"] == int(denied.headers["retry-after"]) == 5
    assert denied.headers["ratelimit"] == '"save_chat";r=0;t=10'


async def test_each_session_has_its_own_count(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        await client.post("/api/v1/chat/save", json={})
    client.cookies.clear()
    assert (await client.post("/api/v1/chat/save", json={})).status_code == 200  # a new visitor


async def test_chat_two_windows_and_register(client: httpx.AsyncClient) -> None:
    chat = [await client.post("/api/chat", json={}) for _ in range(6)]
    assert [r.status_code for r in chat] == [200] * 5 + [429]
    assert chat[0].headers["ratelimit"].startswith('"chat-600s";r=4;')
    assert ', "chat-3600s";r=19;' in chat[0].headers["ratelimit"]
    register = [(await client.post("/auth/register", json={})).status_code for _ in range(6)]
    assert register == [200] * 5 + [429]


async def test_login_by_email_then_the_ban_on_failed_logins(client: httpx.AsyncClient) -> None:
    same = [(await client.post("/api/v1/auth/login", json={"email": "A@x.test", "password": "demo"})) for _ in range(6)]
    assert [r.status_code for r in same] == [200] * 5 + [429]
    assert (await client.post("/api/v1/auth/login", json={"email": "a@X.TEST"})).status_code == 429  # lower-cased
    failed = [
        (await client.post("/api/v1/auth/login", json={"email": f"u{i}@x.test", "password": "no"})).status_code
        for i in range(11)
    ]
    assert failed == [401] * 10 + [403]  # banned after 10 failures in a minute


async def test_generate_by_role_and_a_reader_has_no_token_budget(client: httpx.AsyncClient) -> None:
    owner = {"X-Demo-User": "olga:OWNER"}
    r = await client.post("/generate", headers=owner)
    assert r.status_code == 200 and int(r.headers["x-tokens-used"]) >= 500
    assert '"generate";r=29;' in r.headers["ratelimit"]  # 10/minute x 3
    reader = await client.post("/generate", headers={"X-Demo-User": "rita:READER"})
    assert reader.status_code == 429 and reader.json()["rule"] == "ai-tokens"


async def test_the_dashboard_counts_the_demo_traffic(client: httpx.AsyncClient) -> None:
    for _ in range(4):
        await client.post("/api/v1/chat/save", json={})
    state = (await client.get("/dashboard/state")).json()
    assert state["rules"]["save_chat"]["last_minute"] == {"decisions": 4, "denied": 2}


def test_the_demo_command_serves_the_app(unused_port: int) -> None:
    cmd = [sys.executable, "-m", "ratewarden.cli", "demo", "--port", str(unused_port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{unused_port}/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=5)
                time.sleep(0.1)
        assert r.status_code == 200 and "five teams" in r.text
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_the_demo_command_refuses_a_bad_port() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--port", "eighty"])
    assert exc.value.code == 2


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
