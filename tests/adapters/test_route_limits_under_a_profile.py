"""Per-route limits (FastAPI ``RateLimit``, Flask ``@rw.limit``, Django ``@limit``) work when
``RATEWARDEN_PROFILE`` is set, with and without a policy file: a route's rule is built from its
values by the policy's parsers, so a profile (which overrides a file's rules by name) never
applies to it, and an unknown profile name does not concern it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.testclient import TestClient

from ratewarden import FakeClock
from ratewarden.engine import Engine
from ratewarden.fastapi import RateLimit, install
from ratewarden.flask import RateWarden

POLICY = """
[ratewarden]
headers = "legacy"

[[rule]]
name = "all"
limits = ["100/minute"]

[profile.test.rule.all]
limits = ["50/minute"]
"""


@pytest.fixture(autouse=True)
def _profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATEWARDEN_PROFILE", "test")


@pytest.mark.parametrize("with_policy", [False, True])
def test_fastapi_rate_limit_dependency(with_policy: bool) -> None:
    clock = FakeClock()
    engine = Engine(POLICY, clock=clock) if with_policy else None
    if engine is not None:
        assert engine.policy.rules[0].limits_text == "50/minute", "the profile applies to the file"
    limit = RateLimit("2/minute", key="ip", name="login", engine=engine, **({} if engine else {"clock": clock}))
    app = FastAPI()
    install(app)

    @app.post("/login", dependencies=[Depends(limit)])
    async def login() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app) as client:
        got = [client.post("/login").status_code for _ in range(3)]
    assert got == [200, 200, 429]
    assert limit.engine.policy.profile is None


@pytest.mark.parametrize("with_policy", [False, True])
def test_flask_limit_decorator(with_policy: bool) -> None:
    app = Flask(__name__)
    rw = RateWarden(app, POLICY if with_policy else None, clock=FakeClock())

    @app.post("/login")
    @rw.limit("2/minute", key="ip")
    def login() -> dict[str, bool]:
        return {"ok": True}

    client = app.test_client()
    assert [client.post("/login").status_code for _ in range(3)] == [200, 200, 429]


DJANGO_APP = """
import json, sys
import django
from django.conf import settings

settings.configure(DEBUG=False, SECRET_KEY="x", ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__,
                   INSTALLED_APPS=[], DATABASES={}, USE_TZ=True, **json.loads(sys.argv[1]))
django.setup()

from django.http import HttpResponse
from django.test import RequestFactory
from ratewarden.django import limit

urlpatterns = []

@limit("2/minute", key="ip")
def login(request):
    return HttpResponse("ok")

factory = RequestFactory()
print(json.dumps([login(factory.post("/login", REMOTE_ADDR="198.51.100.7")).status_code for _ in range(3)]))
"""


@pytest.mark.parametrize("with_policy", [False, True])
def test_django_limit_decorator(with_policy: bool, tmp_path: Path) -> None:
    """In a process of its own: Django's settings are configured once per process."""
    app = tmp_path / "django_route_app.py"
    app.write_text(textwrap.dedent(DJANGO_APP))
    policy = tmp_path / "ratewarden.toml"
    policy.write_text(POLICY)
    settings = {"RATEWARDEN_POLICY": str(policy)} if with_policy else {}
    env = {**os.environ, "RATEWARDEN_PROFILE": "test"}
    run = subprocess.run(
        [sys.executable, str(app), json.dumps(settings)], capture_output=True, text=True, env=env, check=False
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == [200, 200, 429]


def test_for_rule_never_applies_a_profile_and_reports_a_bad_rule() -> None:
    base = Engine(POLICY, env={"RATEWARDEN_PROFILE": "test"})
    route = Engine.for_rule({"name": "r", "limits": ["1/minute"]}, base=base, env={"RATEWARDEN_PROFILE": "nope"})
    assert route.policy.rules[0].limits_text == "1/minute" and route.policy.settings.headers == "legacy"
    alone = Engine.for_rule({"name": "r", "limits": "1/minute"}, env={"RATEWARDEN_PROFILE": "nope"})
    assert alone.policy.profile is None
    from ratewarden.policy import PolicyError

    with pytest.raises(PolicyError, match=r"<route>: unknown key 'limts' in \[\[rule\]\]; did you mean 'limits'"):
        Engine.for_rule({"name": "r", "limts": ["1/minute"]})
    with pytest.raises(PolicyError, match="bad rate"):
        Engine.for_rule({"name": "r", "limits": ["1/fortnight"]}, base=base)
    with pytest.raises(PolicyError, match="jwt: key but the policy has no"):
        Engine.for_rule({"name": "r", "limits": ["1/minute"], "key": "jwt:sub"}, base=base)
    for e in (base, route, alone):
        e.close()
