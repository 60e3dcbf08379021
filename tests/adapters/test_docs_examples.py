"""docs/adapters.md: every Python example runs as written next to the document's policy file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def blocks(kind: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(DOC.read_text(encoding="utf-8")) if lang == kind]


def test_the_policy_in_the_doc_loads() -> None:
    from ratewarden.engine import Engine

    (policy,) = blocks("toml")
    engine = Engine(policy)
    assert [r.name for r in engine.policy.rules] == ["api", "login"]


EXPECTED = {
    "starlette": "200",
    "FastAPI": "[200, 200, 429]",
    "werkzeug": "200",
    "Flask": "[200, 200, 200, 429]",
}


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_each_python_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], index: int
) -> None:
    (policy,) = blocks("toml")
    (tmp_path / "ratewarden.toml").write_text(policy, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = blocks("python")[index]
    exec(compile(code, f"{DOC.name}[python {index}]", "exec"), {"__name__": f"doc_example_{index}"})
    out = capsys.readouterr().out
    for marker, expected in EXPECTED.items():
        if marker in code and "print(" in code:
            assert expected in out, (marker, out)
