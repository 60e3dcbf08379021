"""Regenerate ``rls_pb2.py``, ``rls_pb2_grpc.py`` and their ``.pyi`` stubs from ``rls.proto``.

Run ``python -m ratewarden.service.proto.generate`` (needs grpcio-tools and mypy-protobuf, both
in the ``dev`` extra) after editing ``rls.proto``; the generated files are committed, so an
installation needs only grpcio and protobuf. ``tests/service/test_proto.py`` fails when the
committed files differ from what this script produces.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[2]  # .../src: the generated imports read ``from ratewarden.service.proto import ...``


def generate(out: Path = SRC) -> list[Path]:
    """Generate into ``out`` (the ``src`` directory, or a scratch copy of its layout)."""
    import grpc_tools  # type: ignore[import-untyped]
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    proto = HERE / "rls.proto"
    rel = proto.relative_to(SRC)
    target = out / rel.parent
    target.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{SRC}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        str(rel),
    ]
    # the mypy plugins are scripts beside this interpreter (a venv's bin/ need not be on PATH)
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    cwd = os.getcwd()
    os.chdir(SRC)
    try:
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return sorted(target.glob("rls_pb2*"))


if __name__ == "__main__":
    for p in generate():
        print(p)
    sys.exit(0)
