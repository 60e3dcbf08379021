"""``ratewarden check`` and the loader report every independent mistake of a file in one run
(as a compiler does), in line order, with "did you mean" for misspelt keys and values, and no
mistake that is only a consequence of another."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ratewarden.cli import main
from ratewarden.policy import PolicyError, load_policy, loads_policy
from ratewarden.policy.cli import check_main

THREE = Path(__file__).parent.parent / "fixtures" / "multi" / "three_mistakes.toml"


def test_every_mistake_in_one_run() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(THREE, env={})
    errs = info.value.errors
    assert [(e.line, e.reason.split(";")[0]) for e in errs] == [
        (4, "unknown key 'on_store_eror' in [ratewarden]"),
        (9, "unknown key 'limts' in [[rule]]"),
        (
            14,
            "'algorithm' must be one of 'fixed-window', 'sliding-window', 'sliding-log', 'gcra', 'token-bucket', "
            "'quota', not 'fixed_window'",
        ),
        (18, "bad rate: unknown time unit 'fortnight' in '10/fortnight'"),
    ]
    assert "did you mean 'on_store_error'?" in errs[0].reason
    assert "did you mean 'limits'?" in errs[1].reason  # and not also "rule 'login' has no 'limits'"
    assert "did you mean 'fixed-window'?" in errs[2].reason
    assert info.value is errs[0]
    assert str(info.value).splitlines() == [f"{THREE}:{e.line}: {e.reason}" for e in errs]


def test_check_prints_them_all(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert check_main(str(THREE), out) == 1
    lines = out.getvalue().splitlines()
    assert [line.split(":")[2] for line in lines[:-1]] == ["4", "9", "14", "18"]
    assert all(line.startswith(f"error: {THREE}:") for line in lines[:-1])
    assert lines[-1] == "4 errors"
    assert main(["check", str(THREE)]) == 1
    assert capsys.readouterr().out.count("error: ") == 4


def test_unknown_algorithm_lists_only_what_a_policy_accepts() -> None:
    with pytest.raises(PolicyError) as info:
        loads_policy('[[rule]]\nname = "a"\nlimits = ["5/minute"]\nalgorithm = "leaky"\n', env={})
    assert "concurrency" not in info.value.reason
    with pytest.raises(PolicyError) as info:
        loads_policy('[ratewarden]\nalgorithm = "leaky"\n', env={})
    assert "concurrency" not in info.value.reason
    with pytest.raises(PolicyError, match="concurrency algorithm is not available in a policy"):
        loads_policy('[ratewarden]\nalgorithm = "concurrency"\n', env={})


def test_mistakes_in_each_section_and_each_rule_are_all_reported() -> None:
    text = (
        '[ratewarden]\nheaders = "draf"\nipv6_prefix = 200\n'  # 2, 3
        '[[rule]]\nname = "a b"\nlimits = ["5/minute"]\nkey = "hedaer:X"\n'  # 5, 7
        '[[rule]]\nname = "ok"\nlimits = ["5/minute"]\n'
        '[[rule]]\nname = "ok"\nlimits = ["5/minute"]\ncost = -1\n'  # 12 (duplicate name), 14
        '[[ban]]\nname = "b"\nmatch = { status = [401] }\nwithin = "1 minute"\nban_for = "1 hour"\n'  # 15: no max
        '[safelist]\nips = ["300.1.1.1"]\n'  # 21
        '[response]\nbody = { error = "cod" }\n'  # 23
        "[blocklist]\nipz = []\n"  # 25
    )
    with pytest.raises(PolicyError) as info:
        loads_policy(text, env={})
    got = [(e.line, e.reason[:30]) for e in info.value.errors]
    assert [line for line, _ in got] == [2, 3, 5, 7, 12, 14, 15, 21, 23, 25], got
    reasons = " | ".join(e.reason for e in info.value.errors)
    assert "did you mean 'draft'?" in reasons
    assert "did you mean 'code'?" in reasons
    assert "did you mean 'ips'?" in reasons


def test_an_unset_variable_is_reported_once_not_with_what_it_causes() -> None:
    text = '[ratewarden]\nstorage = "${STORE_URL}"\n[[rule]]\nname = "a"\nlimits = ["${RATE}"]\n'
    with pytest.raises(PolicyError) as info:
        loads_policy(text, env={})
    assert [(e.line, e.reason) for e in info.value.errors] == [
        (2, "the environment variable STORE_URL is not set (referenced as ${STORE_URL})"),
        (5, "the environment variable RATE is not set (referenced as ${RATE})"),
    ]


def test_mistakes_in_one_table_do_not_hide_each_other() -> None:
    """A short [jwt] secret used to hide a bad leeway, audience and header on the lines below it."""
    text = '[jwt]\nsecret = "short"\nleeway = nan\naudience = 5\nheader = 7\n'
    with pytest.raises(PolicyError) as info:
        loads_policy(text, env={})
    assert [e.line for e in info.value.errors] == [2, 3, 4, 5]
    assert "shorter than 16" in info.value.errors[0].reason
