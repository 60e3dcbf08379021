"""The repository stands alone: no tracked file points to a document outside it (or to a path on one
engineer's machine), and every link into ``docs/`` (a file, and a ``#section`` of it) resolves to a file and
a heading that exist."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Documents that live outside the repository (written so that this file does not match itself).
OUTSIDE = re.compile(
    r"\.\./shared"  # a sibling directory of the checkout
    r"|\bDESIGN\.md|\bSCENARIOS\.md|\bPEERS\.md|\bSTYLE\.md"  # design notes kept elsewhere
    r"|\b[Ii]nvariant [0-9]"  # invariants cited by a number the reader cannot look up
    r"|\bseed 0[0-9][0-9]\b"  # field notes kept elsewhere
    r"|(?<![\w.])/(?:work|root|home/[\w.-]+|Users/[\w.-]+)/"  # a path on one engineer's machine
)
# "docs/design.md#invariants", "(scenarios.md)", "docs/policy.md": a link into docs/.
DOC_LINK = re.compile(r"(?:docs/|\]\()(?P<file>[A-Za-z0-9_-]+\.md)(?:#(?P<anchor>[A-Za-z0-9_-]+))?")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError) as exc:  # pragma: no cover - not a git checkout
        pytest.skip(f"not a git checkout: {exc}")
    return [ROOT / name for name in out.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None  # binary, or deleted in the working tree


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(doc: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", doc.read_text(encoding="utf-8"), re.M)}


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            m = OUTSIDE.search(line)
            if m:
                found.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r}")
    assert not found, "say it in the project's own words or link into docs/:\n" + "\n".join(found)


def test_every_link_into_docs_resolves() -> None:
    docs = ROOT / "docs"
    broken = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for m in DOC_LINK.finditer(text):
            # a bare "](NAME.md)" link is one into docs/ only when written inside docs/
            if not m.group(0).startswith("docs/") and path.parent != docs:
                continue
            doc = docs / m.group("file")
            where = f"{path.relative_to(ROOT)}: {m.group(0)}"
            if not doc.is_file():
                broken.append(f"{where}: no such file")
            elif m.group("anchor") and m.group("anchor") not in anchors(doc):
                broken.append(f"{where}: no such section")
    assert not broken, "\n".join(broken)


def test_the_checks_can_fail() -> None:
    assert OUTSIDE.search("see " + "../" + "shared/" + "DESIGN" + ".md")
    assert OUTSIDE.search("(" + "invariant" + " 6)")
    assert not OUTSIDE.search("see docs/design.md#defined-failure")
    assert OUTSIDE.search("PYTHONPATH=" + "/work" + "/main/src python bench/run.py")
    assert OUTSIDE.search("from " + "/root" + "/.pyenv/versions/3.11.7/lib")
    assert not OUTSIDE.search("PYTHONPATH=/tmp/before/src python bench/run.py (a worktree)")
    assert not OUTSIDE.search("src/ratewarden/work/root/x.py")
    assert slug("Denials are free (and `retry_after` exact)") == "denials-are-free-and-retry_after-exact"


#: directories of tests/ named after a top-level module (limiter.py, dashboard.py, the adapters) or
#: that cut across src/'s layers on purpose (tests/README.md)
CROSS_CUTTING = {"scenarios", "e2e", "fixtures", "adapters", "limiter", "dashboard"}


def test_the_tests_mirror_src() -> None:
    """Every directory of tests/ is a package of src/ratewarden/ or one of the documented few."""
    src = ROOT / "src" / "ratewarden"
    packages = {p.name for p in src.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    dirs = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    stray = sorted(dirs - packages - CROSS_CUTTING)
    assert not stray, f"tests/{stray[0]}/ mirrors nothing in src/ratewarden/ (tests/README.md)"
    assert (src / "limiter.py").exists() and {"asgi", "wsgi", "flask", "django", "fastapi"} <= {
        p.stem for p in src.glob("*.py")
    }


_TEST_REF = re.compile(r"`((?:[a-z_]+/)*test_\w+\.py)(?:::([\w*]+))?")


def test_every_test_the_docs_name_exists() -> None:
    """A test named in docs/ (`storage/test_memory.py::test_x`, a path under tests/; the name may
    be a pattern with ``*``) exists, and so does the test function: the tests moved when they
    were made to mirror src/, and a document that names an old path sends the reader nowhere."""
    missing = []
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        for path, name in _TEST_REF.findall(doc.read_text(encoding="utf-8")):
            target = ROOT / path if path.startswith("tests/") else ROOT / "tests" / path
            if not target.is_file():
                missing.append(f"{doc.name}: {path}")
            elif name:  # a name, or a pattern such as test_*_keys_are_what_*_hands_*
                defined = re.findall(r"^(?:async )?def (test_\w+)\(", target.read_text(encoding="utf-8"), re.M)
                if not fnmatch.filter(defined, name):
                    missing.append(f"{doc.name}: {path}::{name}")
    assert not missing, missing
