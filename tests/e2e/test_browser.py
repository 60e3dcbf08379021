"""End to end in headless chromium: the demo's Save button under its 2-per-10-seconds rule, the
browser helper's reading of every body shape, and the dashboard after a burst.

The screenshots go to a temporary folder; with ``RW_UPDATE_SCREENSHOTS=1`` they replace the
ones in docs/img/ that the README shows.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx

IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _shots(tmp_path: Path) -> Path:
    return IMG if os.environ.get("RW_UPDATE_SCREENSHOTS") == "1" else tmp_path


def _countdown(page: Any) -> int:
    text = page.locator("#save-msg").inner_text()
    m = re.search(r"Try again in (\d+) s", text)
    assert m, text
    return int(m.group(1))


def test_spam_clicking_save_disables_it_counts_down_and_enables_it_again(demo: str, page: Any, tmp_path: Path) -> None:
    page.goto(demo + "/")
    save = page.locator("#save")
    log = page.locator("#save-log")
    for _ in range(3):  # as fast as a person spam-clicking
        save.click()
    page.wait_for_function("document.querySelector('#save-log').textContent.startsWith('#3:')")
    assert log.inner_text() == "#3: 429"
    assert save.is_disabled()
    assert save.get_attribute("aria-disabled") == "true"
    assert save.get_attribute("aria-describedby") == "save-msg"
    msg = page.locator("#save-msg")
    assert msg.get_attribute("aria-live") == "polite"
    first = _countdown(page)
    assert 1 <= first <= 5  # 2 per 10 s (gcra): the next slot comes within 5 s
    page.locator("#save").screenshot(path=str(_shots(tmp_path) / "demo-countdown-button.png"))
    page.locator("section:has(#save)").screenshot(path=str(_shots(tmp_path) / "demo-countdown.png"))
    started = time.monotonic()

    save.click(force=True)  # a disabled button sends nothing
    page.wait_for_timeout(300)
    assert log.inner_text() == "#3: 429"

    page.wait_for_timeout(1100)
    assert _countdown(page) < first  # it counts down

    page.wait_for_function("!document.querySelector('#save').disabled", timeout=15_000)
    waited = time.monotonic() - started
    assert waited <= first + 1.5
    assert save.get_attribute("aria-disabled") is None
    assert msg.inner_text() == "You can try again now."

    save.click()  # the next click succeeds: the countdown was the server's own
    page.wait_for_function("document.querySelector('#save-log').textContent.startsWith('#4:')")
    assert log.inner_text() == "#4: 200 OK"
    assert page.locator("#save-quota").inner_text() == "0 of 2 left"


SHAPES_JS = """
async () => {
  const rw = await import('/ratewarden.js');
  const out = {};
  out.default = rw.retryAfterFromBody({error: 'rate_limited', message: 'Too many requests', retry_after: 17,
    rule: 'login', limit: 5, remaining: 0, reset: '2026-11-22T15:04:05Z'});
  out.fastapi = rw.retryAfterFromBody({detail: {error: 'rate_limited', retry_after: 9}});
  out.minimal = rw.retryAfterFromBody({error: 'rate_limited', retry_after: 4});
  out.express = rw.retryAfterFromBody({error: 'RATE_LIMIT_EXCEEDED', message: 'Maximum 5 requests per 10 minutes.',
    cooldownSeconds: 42, retryAfter: 42, resetTime: '2030-01-01T00:00:00Z', quotaRemaining: 0});
  out.nest = rw.retryAfterFromBody({message: 'Daily AI token limit exceeded', retryAfter: 3600});
  out.rails = rw.retryAfterFromBody({success: false, retry_after: 300, error_code: 'RATE_LIMIT_EXCEEDED'});
  out.flask = rw.retryAfterFromBody({message: 'Rate limit exceeded. 5 per 1 hour'});
  out.header = rw.retryAfterFromHeaders(new Headers({'Retry-After': '12'}));
  out.date = rw.retryAfterFromHeaders(new Headers({'Retry-After': new Date(Date.now() + 30000).toUTCString()}));
  out.t = rw.retryAfterFromHeaders(new Headers({'RateLimit': '"a";r=3;t=99, "login";r=0;t=12'}));
  out.quota = rw.quotaFrom(new Headers({'RateLimit-Policy': '"chat-600s";q=5;w=600, "chat-3600s";q=20;w=3600',
    'RateLimit': '"chat-600s";r=1;t=500, "chat-3600s";r=16;t=3000'}));
  // protect() on the Express team's body, with no Retry-After header at all
  const button = document.createElement('button');
  const msg = document.createElement('p');
  document.body.append(button, msg);
  const fake = async () => new Response(JSON.stringify({error: 'RATE_LIMIT_EXCEEDED', cooldownSeconds: 42}),
    {status: 429, headers: {'Content-Type': 'application/json'}});
  const r = await rw.protect(button, {message: msg, fetch: fake})('/x');
  out.protect = {status: r.status, disabled: button.disabled, text: msg.textContent,
    live: msg.getAttribute('aria-live')};
  return out;
}
"""


def test_the_helper_reads_every_teams_body_shape_and_the_headers(demo: str, page: Any) -> None:
    page.goto(demo + "/")
    out = page.evaluate(SHAPES_JS)
    assert (out["default"], out["fastapi"], out["minimal"], out["express"]) == (17, 9, 4, 42)
    assert (out["nest"], out["rails"], out["flask"]) == (3600, 300, None)
    assert out["header"] == 12 and 29 <= out["date"] <= 30 and out["t"] == 12
    assert out["quota"] == {"name": "chat-600s", "remaining": 1, "limit": 5, "reset": 500}
    assert out["protect"] == {
        "status": 429,
        "disabled": True,
        "text": "Too many requests. Try again in 42 s.",
        "live": "polite",
    }


def test_the_dashboard_after_a_burst_shows_the_denials(demo: str, page: Any, tmp_path: Path) -> None:
    with httpx.Client(base_url=demo) as c:  # keeps the demo's session cookie: one visitor
        save = [c.post("/api/v1/chat/save", json={"text": "x"}).status_code for _ in range(30)]
        chat = [c.post("/api/chat", json={}).status_code for _ in range(12)]
        register = [c.post("/auth/register", json={}).status_code for _ in range(8)]
    assert save.count(200) == 2 and save.count(429) == 28
    assert chat.count(200) == 5 and register.count(200) == 5
    page.goto(demo + "/dashboard")
    page.wait_for_function("document.querySelector('#live').textContent === 'live'", timeout=10_000)
    row = page.locator('tr[data-rule="save_chat"]')
    assert int(row.locator("td.denied").inner_text()) >= 28
    assert int(row.locator("td.decisions").inner_text()) >= 30
    assert int(page.locator('tr[data-rule="chat"] td.denied').inner_text()) >= 7
    assert int(page.locator("#total-denied").inner_text()) >= 38
    assert "save_chat: " in page.locator("#keys").inner_text()
    assert page.locator("#store").inner_text() == "store: healthy"
    painted = page.evaluate(
        """() => { const c = document.querySelector('#chart'); const d = c.getContext('2d')
             .getImageData(0, 0, c.width, c.height).data; let red = 0;
             for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 1] < 90 && d[i + 2] < 90) red++;
             return red; }"""
    )
    assert painted > 20  # the denied bars are on the chart
    page.screenshot(path=str(_shots(tmp_path) / "dashboard.png"), full_page=True)


def test_the_dashboard_streams_server_sent_events(demo: str) -> None:
    with httpx.Client(base_url=demo, timeout=10) as c, c.stream("GET", "/dashboard/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data: "):
                break
    assert "event: state" in lines
    assert '"rules"' in lines[-1] and '"save_chat"' in lines[-1]


def test_every_button_of_the_demo_page_is_wired(demo: str, page: Any) -> None:
    page.goto(demo + "/")
    expected = {
        "personalize": ("save-log", "#1: 200 OK"),
        "sync": ("sync-log", "#1: 200 OK"),
        "login": ("sync-log", "#1: 401"),  # the page's default password is wrong on purpose
        "register": ("register-log", "#1: 200 OK"),
        "chat": ("chat-log", "#1: 200 OK"),
        "generate": ("generate-log", "#1: 200 OK"),
    }
    for button, (log, text) in expected.items():
        page.locator(f"#{button}").click()
        page.wait_for_function(f"document.querySelector('#{log}').textContent === {text!r}", timeout=10_000)
    assert page.locator("#chat-quota").inner_text() == "4 of 5 left"
    assert page.locator("#generate-quota").inner_text().endswith("left")
