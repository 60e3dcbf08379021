"""Every numeric option of the policy file, fed NaN, infinities, huge, negative and wrong-type
values: each is a PolicyError that names the file, the line of the option and the value, and
never any other exception (no OverflowError, ValueError or TypeError from deep inside)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratewarden.policy import PolicyError, load_policy, loads_policy, sections

#: (option, policy text with the option's value as {v} on the line marked "<-")
OPTIONS: dict[str, str] = {
    "store_error_status": "[ratewarden]\nstore_error_status = {v}  # <-\n",
    "store_error_retry_after": "[ratewarden]\nstore_error_retry_after = {v}  # <-\n",
    "ipv6_prefix": "[ratewarden]\nipv6_prefix = {v}  # <-\n",
    "ipv4_prefix": "[ratewarden]\nipv4_prefix = {v}  # <-\n",
    "body_limit": "[ratewarden]\nbody_limit = {v}  # <-\n",
    "max_key_length": "[ratewarden]\nmax_key_length = {v}  # <-\n",
    "burst": '[[rule]]\nname = "r"\nlimits = ["10/minute"]\nburst = {v}  # <-\n',
    "cost": '[[rule]]\nname = "r"\nlimits = ["10/minute"]\ncost = {v}  # <-\n',
    "tier": '[[rule]]\nname = "r"\nlimits = ["10/minute"]\ntiers = {{ attr = "plan", pro = {v} }}  # <-\n',
    "ban.max": '[[ban]]\nname = "b"\nmatch = {{ status = [401] }}\nmax = {v}  # <-\nwithin = 60\nban_for = 60\n',
    "ban.within": '[[ban]]\nname = "b"\nmatch = {{ status = [401] }}\nmax = 5\nwithin = {v}  # <-\nban_for = 60\n',
    "ban.ban_for": '[[ban]]\nname = "b"\nmatch = {{ status = [401] }}\nmax = 5\nwithin = 60\nban_for = {v}  # <-\n',
    "ban.status": '[[ban]]\nname = "b"\nmatch = {{ status = [{v}] }}  # <-\nmax = 5\nwithin = 60\nban_for = 60\n',
    "jwt.leeway": '[jwt]\nsecret = "0123456789abcdef0123"\nleeway = {v}  # <-\n',
    "jwt.audience": '[jwt]\nsecret = "0123456789abcdef0123"\naudience = {v}  # <-\n',
    "jwt.issuer": '[jwt]\nsecret = "0123456789abcdef0123"\nissuer = {v}  # <-\n',
    "response.status": "[response]\nstatus = {v}  # <-\n",
    "quota.tz": '[[rule]]\nname = "r"\nlimits = ["10/day"]\nalgorithm = "quota"\nperiod = {{ tz = {v} }}  # <-\n',
}
HUGE = "1" + "0" * 400
#: values no numeric option accepts (TOML literals)
BAD = ["nan", "-nan", "inf", "-inf", "1e308", "-1e308", "1e400", "-1", "-0.5", HUGE, "-" + HUGE, "true"]
BAD += ["[1, 2]", "{ a = 1 }", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27"]
NOT_A_STRING_OPTION = ("jwt.audience", "jwt.issuer")


def _line(template: str) -> int:
    return next(i for i, line in enumerate(template.splitlines(), start=1) if "# <-" in line)


def _load(template: str, value: str) -> None:
    loads_policy(template.format(v=value), source="policy.toml", env={})


@pytest.mark.parametrize("value", [*BAD, '"abc"', '""'], ids=lambda v: v[:12])
@pytest.mark.parametrize("option", OPTIONS)
def test_a_bad_value_is_a_policy_error_at_its_line(option: str, value: str) -> None:
    template = OPTIONS[option]
    if value in ('"abc"',) and option in NOT_A_STRING_OPTION:
        _load(template, value)  # a string is what these take
        return
    with pytest.raises(PolicyError) as info:
        _load(template, value)
    err = info.value
    assert (err.file, err.line) == ("policy.toml", _line(template)), str(err)
    assert len(err.errors) == 1, str(err)
    parsed = tomllib.loads(f"v = {value}")["v"]
    if type(parsed) is int and abs(parsed) > 10**15:
        assert "401-digit number" in err.reason, err.reason
    elif isinstance(parsed, int | float | str) and not isinstance(parsed, bool):
        assert repr(parsed).strip("'") in err.reason, err.reason  # the value is named


@pytest.mark.parametrize(
    "limits",
    [
        f'"1/{"9" * 400} seconds"',
        f'"{"9" * 400}/second"',
        '"2/100000000000 years"',
        '"1000000000001/second"',
        '"1/3661 days"',
        '"nan/second"',
        '"1/nan seconds"',
        '"1/inf seconds"',
        '"-1/second"',
        "5",
        "nan",
        "{ a = 1 }",
        '["5/minute", 5]',
    ],
)
def test_a_bad_rate_is_a_policy_error_at_its_line(limits: str) -> None:
    template = '[[rule]]\nname = "r"\nlimits = {v}  # <-\n'
    with pytest.raises(PolicyError) as info:
        _load(template, limits)
    assert info.value.line == 3, str(info.value)


@pytest.mark.parametrize("limits", ['"1000000000000/second"', '"1/3660 days"', '"5 per 10 years"', '"1/120 months"'])
def test_the_largest_promised_rates_load(limits: str) -> None:
    _load('[[rule]]\nname = "r"\nlimits = {v}  # <-\n', limits)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option=st.sampled_from(sorted(OPTIONS)), value=VALUES)
def test_any_value_loads_or_is_a_located_policy_error(option: str, value: object) -> None:
    template = OPTIONS[option]
    try:
        _load(template, _toml(value))
    except PolicyError as err:
        assert err.line > 0, str(err)
        for e in err.errors:
            assert e.line > 0, str(err)


def test_check_never_prints_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[ratewarden]\nstore_error_retry_after = inf\n[[rule]]\nname = "a"\nlimits = ["1/' + "9" * 400 + ' seconds"]\n'
        '[[rule]]\nname = "b"\nlimits = ["5/minute"]\ntiers = { attr = "plan", pro = nan }\n'
        '[[ban]]\nname = "c"\nmatch = { status = [401] }\nmax = 5\nwithin = nan\nban_for = 1e308\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "ratewarden.cli", "check", str(bad)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("error: ")]
    assert [int(line.split(":")[2]) for line in lines] == [2, 5, 9, 14, 15], run.stdout
    with pytest.raises(PolicyError) as info:
        load_policy(bad, env={})
    assert len(info.value.errors) == 5


_ANY = [
    *BAD,
    "0",
    "1",
    "5",
    '"abc"',
    '""',
    '"ip"',
    '"5/minute"',
    '["5/minute"]',
    "[]",
    "{}",
    '["a", 1]',
    "[[1]]",
    '{ claim = "r", x = nan }',
    "{ attr = [1] }",
    '{ default = [1], attr = "p", a = 1 }',
    "{ path = 5 }",
    '{ status = "x" }',
    "{ reset = 5 }",
    '{ header = "X", value = 5 }',
    "{ error = [1] }",
    '"header:X"',
    '"response.header:X"',
    '"jwt:sub"',
]
_SECTIONS = {
    "ratewarden": sections.SETTINGS_KEYS,
    "safelist": sections.SAFELIST_KEYS,
    "blocklist": sections.BLOCKLIST_KEYS,
    "jwt": sections.JWT_KEYS,
    "response": sections.RESPONSE_KEYS,
    "rule": sections.RULE_KEYS,
    "ban": sections.BAN_KEYS,
}
_BASE = {
    "jwt": {"secret": '"0123456789abcdef0123"'},
    "rule": {"name": '"r"', "limits": '["5/minute"]'},
    "ban": {"name": '"b"', "max": "5", "within": "60", "ban_for": "60", "match": "{ status = [401] }"},
}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), section=st.sampled_from(sorted(_SECTIONS)))
def test_any_value_of_any_option_loads_or_is_a_located_policy_error(data: st.DataObject, section: str) -> None:
    """Structure fuzzing: every option of every section takes any of many values; the load
    either succeeds or fails with PolicyErrors that all have a line, never another exception."""
    table = dict(_BASE.get(section, {}))
    for _ in range(data.draw(st.integers(1, 3))):
        table[data.draw(st.sampled_from(_SECTIONS[section]))] = data.draw(st.sampled_from(_ANY))
    header = f"[[{section}]]" if section in ("rule", "ban") else f"[{section}]"
    text = header + "\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
    try:
        loads_policy(text, source="policy.toml", env={})
    except PolicyError as err:
        assert all(e.line > 0 for e in err.errors), str(err)
