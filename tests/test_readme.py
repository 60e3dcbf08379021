"""README's examples run as written: its Python blocks, next to its ratewarden.toml block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ratewarden.toml").write_text(_blocks("toml")[0])
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("python")
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})


def test_readme_policy_passes_check(tmp_path: Path) -> None:
    from ratewarden.policy.cli import check_main

    path = tmp_path / "ratewarden.toml"
    path.write_text(_blocks("toml")[0])
    assert check_main(str(path)) == 0


def test_readme_opens_with_the_two_commands() -> None:
    first = _blocks("sh")[0].splitlines()
    commands = [line for line in first if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "ratewarden simulate" in commands[0] and "pip install" in commands[0]
    assert "pytest" in commands[1] and "pip install" in commands[1]
    assert commands[1].split("&&")[-1].strip() in Path(README.parent / ".ci" / "run").read_text()
