"""docs/client.md: its Python examples run as written (next to a ratewarden.toml)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ratewarden.demo import POLICY

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def test_the_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ratewarden.toml").write_text(Path(POLICY).read_text())
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 2
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
