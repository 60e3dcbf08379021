"""Loading valid policies: docs/design.md#the-policy-file example, defaults, profiles, environment overrides."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ratewarden.core.rates import Rate
from ratewarden.policy import PolicyError, loads_policy
from ratewarden.policy.cli import check_main

DESIGN_EXAMPLE = """
[ratewarden]
storage = "memory://"             # overridable by RATEWARDEN_STORAGE
headers = "draft"
on_store_error = "allow"
trusted_proxies = ["10.0.0.0/8"]
ipv6_prefix = 64

[[rule]]
name = "login"
match = { path = "/api/v1/auth/login", methods = ["POST"] }
key = "body:email|lower"
limits = ["5/20 minutes"]

[[rule]]
name = "generate"
match = { path = "/generate*" }
key = "user"
limits = ["10/minute"]
tiers = { claim = "role", OWNER = 3, MAINTAINER = 2, WRITER = 1.5, READER = 1 }

[[rule]]
name = "ai-tokens"
match = { path = "/generate*" }
key = "user"
algorithm = "quota"
limits = ["3000000/day"]
cost = "response.header:X-Tokens-Used"   # charged after the response
period = { reset = "00:00", tz = "UTC" }

[[ban]]
name = "login-abuse"
match = { path = "/api/v1/auth/login", status = [401, 403] }
key = "ip"
max = 10
within = "1 minute"
ban_for = "1 hour"

[safelist]
ips = ["127.0.0.1", "::1"]
header_secret = { header = "X-Service-Token", env = "SERVICE_SECRET" }

[blocklist]
ips = ["203.0.113.0/24"]
"""

ENV = {"SERVICE_SECRET": "s3cret-service-token"}


def test_design_example_loads_exactly() -> None:
    p = loads_policy(DESIGN_EXAMPLE, env=ENV)
    s = p.settings
    assert (s.storage, s.headers, s.on_store_error, s.ipv6_prefix) == ("memory://", "draft", "allow", 64)
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8"]
    login, gen, tokens = p.rules
    assert login.name == "login" and login.match.paths == ("/api/v1/auth/login",)
    assert login.match.methods == {"POST"}
    assert str(login.key) == "body:email|lower" and login.key.parts[0].filters == ("lower",)
    assert [w.rate for w in login.windows] == [Rate(5, 1200 * 10**6)]
    assert login.algorithm == "gcra" and login.fallback is not None and str(login.fallback) == "ip"
    assert gen.tiers is not None and gen.tiers.attr == "role"
    assert gen.tiers.factors == {"OWNER": 3, "MAINTAINER": 2, "WRITER": 1.5, "READER": 1}
    assert [w.limit for w in gen.tiers.windows["WRITER"]] == [15]
    assert tokens.algorithm == "quota" and tokens.cost.after_response and tokens.cost.header == "x-tokens-used"
    (ban,) = p.bans
    assert (ban.mode, ban.max, ban.within_us, ban.ban_for_us) == ("fail2ban", 10, 60 * 10**6, 3600 * 10**6)
    assert ban.match.statuses == {401, 403}
    assert p.safelist.secret == ENV["SERVICE_SECRET"] and p.safelist.secret_header == "x-service-token"
    assert [str(n) for n in p.blocklist.networks] == ["203.0.113.0/24"]
    assert p.needs_body


def test_defaults_of_an_empty_policy() -> None:
    p = loads_policy("", env={})
    assert p.rules == () and p.bans == ()
    s = p.settings
    assert (s.storage, s.headers, s.on_store_error, s.algorithm, s.ipv6_prefix, s.body_limit) == (
        "memory://",
        "draft",
        "allow",
        "gcra",
        64,
        65536,
    )
    assert p.response.status == 429 and p.response.body["error"] == "code"


PROFILED = """
[ratewarden]
storage = "memory://"

[[rule]]
name = "save_chat"
key = "session"
limits = ["5/60 seconds"]

[profile.test.rule.save_chat]
limits = ["2/10 seconds"]

[profile.test.ratewarden]
headers = "legacy"

[profile.prod.ratewarden]
storage = "redis://127.0.0.1:6379/0"
"""


def test_profile_selected_by_environment() -> None:
    base = loads_policy(PROFILED, env={})
    assert [w.rate for w in base.rules[0].windows] == [Rate(5, 60 * 10**6)]
    test = loads_policy(PROFILED, env={"RATEWARDEN_PROFILE": "test"})
    assert [w.rate for w in test.rules[0].windows] == [Rate(2, 10 * 10**6)]
    assert test.settings.headers == "legacy" and test.profile == "test"
    prod = loads_policy(PROFILED, profile="prod", env={"RATEWARDEN_PROFILE": "test"})
    assert prod.settings.storage == "redis://127.0.0.1:6379/0"
    assert [w.rate for w in prod.rules[0].windows] == [Rate(5, 60 * 10**6)]


def test_environment_overrides_beat_the_file_and_profile() -> None:
    p = loads_policy(
        PROFILED,
        env={
            "RATEWARDEN_PROFILE": "prod",
            "RATEWARDEN_STORAGE": "sqlite:///tmp/x.db",
            "RATEWARDEN_HEADERS": "both",
            "RATEWARDEN_ON_STORE_ERROR": "deny",
        },
    )
    assert p.settings.storage == "sqlite:///tmp/x.db"
    assert (p.settings.headers, p.settings.on_store_error) == ("both", "deny")


def test_bad_environment_override_is_reported() -> None:
    with pytest.raises(PolicyError, match=r"'headers' must be one of .* RATEWARDEN_HEADERS") as info:
        loads_policy(PROFILED, env={"RATEWARDEN_HEADERS": "fancy"})
    assert info.value.line == 0
    with pytest.raises(PolicyError, match=r"storage must be a URL .*RATEWARDEN_STORAGE"):
        loads_policy(PROFILED, env={"RATEWARDEN_STORAGE": "redis"})


def test_env_references_and_defaults() -> None:
    text = '[ratewarden]\nstorage = "${RW_STORE:-memory://}"\nkey_prefix = "${RW_PREFIX}:"\n'
    assert loads_policy(text, env={"RW_PREFIX": "app"}).settings.key_prefix == "app:"
    assert loads_policy(text, env={"RW_PREFIX": "a", "RW_STORE": "sqlite:///x.db"}).settings.storage == "sqlite:///x.db"
    with pytest.raises(PolicyError) as info:
        loads_policy(text, env={}, source="rw.toml")
    assert (info.value.line, str(info.value)) == (
        3,
        "rw.toml:3: the environment variable RW_PREFIX is not set (referenced as ${RW_PREFIX})",
    )


def test_unselected_profile_need_not_resolve_its_variables() -> None:
    text = '[profile.prod.ratewarden]\nstorage = "${RW_PROD_REDIS}"\n'
    assert loads_policy(text, env={}).settings.storage == "memory://"
    with pytest.raises(PolicyError, match="RW_PROD_REDIS is not set"):
        loads_policy(text, env={"RATEWARDEN_PROFILE": "prod"})


def test_tiers_replace_mode_and_zero_budget() -> None:
    p = loads_policy(
        """
[[rule]]
name = "tokens"
key = "user"
algorithm = "quota"
limits = ["500000/day"]
tiers = { attr = "plan", mode = "replace", default = "free", free = "1000/day", pro = ["3000000/day"], none = 0 }
""",
        env={},
    )
    t = p.rules[0].tiers
    assert t is not None and t.mode == "replace" and t.default == "free"
    assert [w.limit for w in t.windows["pro"]] == [3_000_000] and t.windows["none"] == ()


def test_check_main_prints_what_it_understood(tmp_path: Path) -> None:
    f = tmp_path / "ratewarden.toml"
    f.write_text(DESIGN_EXAMPLE.replace('env = "SERVICE_SECRET"', 'value = "0123456789"'))
    out = io.StringIO()
    assert check_main(str(f), out) == 0
    text = out.getvalue()
    assert "rule 1 'login': POST /api/v1/auth/login -> key body:email|lower (fallback ip) limits 5/20 minutes" in text
    assert "tiers by role: OWNER x3, MAINTAINER x2, WRITER x1.5, READER x1" in text
    assert "cost charged after the response from x-tokens-used" in text
    assert "ban 1 'login-abuse' (fail2ban): 10 responses with /api/v1/auth/login status 401, 403 within 60s" in text
    assert text.rstrip().endswith("OK: 3 rule(s), 1 ban(s)")


def test_the_docs_example_loads() -> None:
    import re

    doc = (Path(__file__).parent.parent.parent / "docs" / "policy.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    env = {"SERVICE_SECRET": "service-secret-1", "JWT_SECRET": "x" * 32, "REDIS_URL": "redis://127.0.0.1:6379/11"}
    full = loads_policy(blocks[0], env=env)
    assert [r.name for r in full.rules] == ["login", "sync", "generate", "ai-tokens", "new-search-limit"]
    test = loads_policy(blocks[0], env={**env, "RATEWARDEN_PROFILE": "test"})
    assert str(test.rules[0].windows[0].rate) == "2/10 seconds"
    for block in blocks[1:]:
        if "tiers = {" in block and "[[rule]]" not in block:
            continue  # two alternative one-line fragments
        text = (
            block
            if ("[[rule]]" in block or "[response" in block)
            else '[[rule]]\nname = "x"\nlimits = ["1/s"]\n' + block
        )
        loads_policy(text, env=env)
        if "profile.prod" in block:
            assert loads_policy(text, env={**env, "RATEWARDEN_PROFILE": "prod"}).settings.storage == env["REDIS_URL"]


def test_websocket_message_method_is_allowed() -> None:
    p = loads_policy('[[rule]]\nname = "m"\nmatch = { path = "/ws", methods = ["message"] }\nlimits = ["3/minute"]\n')
    assert p.rules[0].match.methods == {"MESSAGE"}
    with pytest.raises(PolicyError, match="unknown HTTP method 'MESAGE'"):
        loads_policy('[[rule]]\nname = "m"\nmatch = { methods = ["MESAGE"] }\nlimits = ["3/minute"]\n')
