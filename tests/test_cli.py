"""The ``ratewarden`` command: simulate prints exact decisions; errors are clear, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ratewarden.cli import main


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]


def test_simulate_fixed_window_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "5/10s", "--algorithm", "fixed-window", "--requests", "20", "--every", "0.4s"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 20
    assert [r[2] for r in rows[:5]] == ["pass"] * 5
    assert rows[5][2:] == ["DENY", "0", "8"]  # request 6 at t=2 s waits for the window end at 10 s
    assert rows[19][2:] == ["DENY", "0", "2.4"]


def test_simulate_all_shows_the_fixed_window_edge_burst(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "5/10s", "-a", "all", "-n", "14", "-e", "1s", "--offset", "8s"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    fixed = [r[2] for r in rows]
    # 7 requests pass within 7 s across the edge at t=2 s: fixed window's documented 2x burst
    assert fixed[:7] == ["pass"] * 7 and fixed[7] == "DENY"
    assert "sliding-log 9/14" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "5/parsec"], "unknown time unit 'parsec'"),
        (["simulate", "0/s"], "limit must be a positive integer"),
        (["simulate", "5/s", "-a", "leaky"], "simulate takes one of"),
        (["simulate", "5/s", "-n", "0"], "--requests must be between"),
        (["simulate", "5/s", "--every", "soon"], "unknown time unit 'soon'"),
        (["simulate", "5/s", "--every", "1e400"], "from 0 to 10 years"),
        (["simulate", "5/s", "--every", "nan"], "from 0 to 10 years"),
        (["simulate", "5/s", "--offset", "inf"], "from 0 to 10 years"),
        (["simulate", "5/s", "--every", "1e300"], "from 0 to 10 years"),
        (["simulate", "5/s", "--every", "-1"], "from 0 to 10 years"),
    ],
)
def test_simulate_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ratewarden.cli", "simulate", "2/s", "-n", "3", "-e", "0.1s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "passed: gcra 2/3" in out


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    import ratewarden

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ratewarden {ratewarden.__version__}"


def test_python_dash_m_ratewarden_is_the_command() -> None:
    run = subprocess.run([sys.executable, "-m", "ratewarden", "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("ratewarden ")
    out = subprocess.run(
        [sys.executable, "-m", "ratewarden", "simulate", "2/s", "-n", "3", "-e", "0.1s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "passed: gcra 2/3" in out
