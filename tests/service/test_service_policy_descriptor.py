"""The ``descriptor`` rule option: parsed into the rule, each mistake refused with its line; and
the generated gRPC modules are what the committed proto and its script produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratewarden.policy.load import loads_policy
from ratewarden.policy.model import Descriptor
from ratewarden.policy.reader import PolicyError
from ratewarden.service.descriptors import DescriptorIndex, Route, descriptor_key

BASE = '[[rule]]\nname = "r"\nkey = "ip"\nlimits = ["5/minute"]\n'


def test_descriptor_is_read() -> None:
    p = loads_policy(BASE + 'descriptor = { domain = "edge", entries = ["remote_address", "path=/login", "x=a=b"] }\n')
    assert p.rules[0].descriptor == Descriptor("edge", (("remote_address", None), ("path", "/login"), ("x", "a=b")))
    assert loads_policy(BASE).rules[0].descriptor is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"edge"', "descriptor must be a table"),
        ('{ entries = ["a"] }', "missing required key 'domain'"),
        ('{ domain = "", entries = ["a"] }', "the descriptor domain is empty"),
        ('{ domain = "e", entries = [] }', "at least one entry"),
        ('{ domain = "e", entries = "a" }', "'entries' must be a list of strings"),
        ('{ domain = "e", entries = ["=x"] }', "needs a key"),
        ('{ domain = "e", entries = ["a=1", "b=2"] }', "every entry is pinned"),
        ('{ domain = "e", entries = ["a"], extra = 1 }', "extra"),
    ],
)
def test_descriptor_mistakes(value: str, reason: str) -> None:
    with pytest.raises(PolicyError) as err:
        loads_policy(BASE + f"descriptor = {value}\n", source="p.toml")
    assert err.value.line == 5 and reason in err.value.reason, str(err.value)


def test_keys_escape_the_separator() -> None:
    r = Route("d", (("a", None), ("p", "x"), ("b", None)), None)
    assert descriptor_key(r, ["1", "x", "2"]) == "1|2"
    assert descriptor_key(r, ["1|2", "x", "3"]) != descriptor_key(r, ["1", "x", "2|3"])
    assert descriptor_key(r, ["a\\", "x", "b"]) == "a\\\\|b"
    idx = DescriptorIndex([r])
    assert idx.match("d", [("a", "1"), ("p", "x"), ("b", "2")]) is r
    assert idx.match("d", [("a", "1"), ("p", "y"), ("b", "2")]) is None


def test_generated_grpc_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    from ratewarden.service.proto import generate

    produced = generate.generate(tmp_path)
    assert produced
    for p in produced:
        committed = generate.HERE / p.name
        assert committed.read_text() == p.read_text(), (
            f"{committed.name} is stale: run python -m ratewarden.service.proto.generate"
        )
