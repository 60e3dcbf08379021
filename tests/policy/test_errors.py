"""Every policy error has its own small fixture file; each test pins the file, the line and the reason."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from ratewarden.policy import PolicyError, load_policy
from ratewarden.policy.cli import check_main

FIXTURES = Path(__file__).parent.parent / "fixtures" / "policies"
CASES = sorted(FIXTURES.glob("*.toml"))


def _expect(path: Path) -> tuple[int, str, str | None]:
    text = path.read_text()
    line = re.search(r"^# expect-line: (\d+)$", text, re.M)
    reason = re.search(r"^# expect: (.*)$", text, re.M)
    profile = re.search(r"^# profile: (\S+)$", text, re.M)
    assert line and reason, f"{path.name} lacks its '# expect' header"
    return int(line.group(1)), reason.group(1), profile.group(1) if profile else None


def test_there_is_a_fixture_per_error() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_error_names_file_line_and_reason(path: Path) -> None:
    line, reason, profile = _expect(path)
    with pytest.raises(PolicyError) as info:
        load_policy(path, profile=profile, env={})
    err = info.value
    assert err.file == str(path)
    assert err.line == line, f"reported line {err.line}: {path.read_text().splitlines()[err.line - 1]!r}"
    assert reason in err.reason
    assert str(err) == f"{path}:{line}: {err.reason}"
    assert err.errors == (err,), "one mistake, reported once (nothing that only follows from it)"
    assert err.line > 3, "the error points into the policy, below the fixture's header comments"


def test_check_main_prints_the_error_and_fails() -> None:
    out = io.StringIO()
    path = FIXTURES / "bad_rate_unit.toml"
    assert check_main(str(path), out) == 1
    assert out.getvalue().startswith(f"error: {path}:6: bad rate: unknown time unit 'fortnight'")


def test_unreadable_file() -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(FIXTURES / "no-such-file.toml")
