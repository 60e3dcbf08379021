"""Spoofing at the engine level: proxies, X-Forwarded-For/Forwarded, IPv6 prefixes, JWTs."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from rw_engine_helpers import MakeEngine, req

from ratewarden import FakeClock
from ratewarden.policy import loads_policy
from ratewarden.policy.keys import client_address, parse_forwarded

PROXIED = """
[ratewarden]
trusted_proxies = ["10.0.0.0/8", "fd00::/8"]

[[rule]]
name = "all"
limits = ["3/minute"]
algorithm = "fixed-window"
"""


def test_untrusted_peer_cannot_change_its_key_with_x_forwarded_for(make: MakeEngine) -> None:
    e = make(PROXIED)
    got = [e.check(req(ip="198.51.100.7", headers={"x-forwarded-for": f"203.0.113.{i}"})).allowed for i in range(6)]
    assert got == [True] * 3 + [False] * 3


def test_right_most_untrusted_hop_through_trusted_proxies(make: MakeEngine) -> None:
    e = make(PROXIED)
    # the client prepends fake hops; the proxies (10.x) append the real peer each time
    for i in range(3):
        fake = f"1.2.3.{i}, 5.6.7.{i}"
        assert e.check(req(ip="10.0.0.1", headers={"x-forwarded-for": f"{fake}, 198.51.100.7, 10.0.0.2"})).allowed
    v = e.check(req(ip="10.0.0.1", headers={"x-forwarded-for": "9.9.9.9, 198.51.100.7, 10.0.0.2"}))
    assert not v.allowed, "same real client behind the proxies: same bucket"
    assert e.check(req(ip="10.0.0.1", headers={"x-forwarded-for": "198.51.100.8, 10.0.0.2"})).allowed


def test_client_address_rules() -> None:
    proxies = loads_policy(PROXIED).settings.trusted_proxies
    xff = "x-forwarded-for"
    assert str(client_address("10.0.0.1", {xff: "198.51.100.7"}, proxies, xff)) == "198.51.100.7"
    assert str(client_address("198.51.100.9", {xff: "198.51.100.7"}, proxies, xff)) == "198.51.100.9"
    assert str(client_address("10.0.0.1", {xff: "10.0.0.5, 10.0.0.6"}, proxies, xff)) == "10.0.0.5"
    assert str(client_address("10.0.0.1", {xff: "garbage, 10.0.0.6"}, proxies, xff)) == "10.0.0.6"
    assert str(client_address("10.0.0.1", {xff: "198.51.100.7, garbage"}, proxies, xff)) == "10.0.0.1"
    assert str(client_address("10.0.0.1", {}, proxies, xff)) == "10.0.0.1"
    assert str(client_address("::ffff:10.0.0.1", {xff: "[2001:db8::1]:443"}, proxies, xff)) == "2001:db8::1"
    assert client_address(None, {xff: "1.2.3.4"}, proxies, xff) is None
    assert client_address("not-an-ip", {xff: "1.2.3.4"}, proxies, xff) is None
    fwd = 'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711", for=10.0.0.3'
    assert parse_forwarded(fwd) == ["192.0.2.60", "[2001:db8:cafe::17]:4711", "10.0.0.3"]
    assert str(client_address("10.0.0.1", {"forwarded": fwd}, proxies, "forwarded")) == "2001:db8:cafe::17"


def test_forwarded_header_when_configured(make: MakeEngine) -> None:
    e = make(PROXIED.replace("[ratewarden]", '[ratewarden]\nproxy_header = "forwarded"'))
    h = {"forwarded": "for=203.0.113.5", "x-forwarded-for": "1.1.1.1"}
    assert sum(e.check(req(ip="10.0.0.1", headers=h)).allowed for _ in range(5)) == 3
    assert e.check(req(ip="10.0.0.1", headers={"forwarded": "for=203.0.113.6"})).allowed


def test_thousand_ipv6_addresses_in_one_64_share_one_limit(make: MakeEngine) -> None:
    e = make(PROXIED)
    net = ipaddress.IPv6Network("2001:db8:1:2::/64")
    admitted = sum(e.check(req(ip=str(net[i * 7919 + 1]))).allowed for i in range(1000))
    assert admitted == 3
    assert e.check(req(ip="2001:db8:1:3::1")).allowed, "the next /64 is another client"


def test_ipv6_prefix_is_configurable(make: MakeEngine) -> None:
    e = make(PROXIED.replace("[ratewarden]", "[ratewarden]\nipv6_prefix = 128"))
    assert all(e.check(req(ip=f"2001:db8::{i:x}")).allowed for i in range(1, 50))


SECRET = "a-long-hs256-secret-for-tests-only"
JWT_RULES = """
[jwt]
algorithms = ["HS256"]
secret = "${JWT_SECRET}"

[[rule]]
name = "sync"
key = "jwt:sub"
limits = ["2/minute"]
algorithm = "fixed-window"
"""


def _token(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256", **kw: Any) -> str:
    return jwt.encode(claims, key, algorithm=alg, **kw)


def test_jwt_sub_keys_and_forged_tokens_fall_back_to_ip(make: MakeEngine, clock: FakeClock) -> None:
    e = make(JWT_RULES, env={"JWT_SECRET": SECRET})
    now = int(clock())
    alice = {"authorization": "Bearer " + _token({"sub": "alice", "exp": now + 3600})}
    assert [e.check(req(ip="198.51.100.1", headers=alice)).allowed for _ in range(3)] == [True, True, False]
    # bob has his own bucket, from any address
    bob = {"authorization": "Bearer " + _token({"sub": "bob", "exp": now + 3600})}
    assert e.check(req(ip="198.51.100.1", headers=bob)).allowed
    # a forged token claiming to be bob (wrong key), an expired one and an unsigned one are anonymous:
    # they are keyed by their ip (198.51.100.2), and never take bob's or alice's bucket
    forged = _token({"sub": "bob", "exp": now + 3600}, key="another-secret-of-sufficient-length")
    expired = _token({"sub": "bob", "exp": now - 1})
    unsigned = jwt.encode({"sub": "bob"}, None, algorithm="none")
    premature = _token({"sub": "bob", "nbf": now + 60})
    results = [
        e.check(req(ip="198.51.100.2", headers={"authorization": f"Bearer {t}"})).allowed
        for t in (forged, expired, unsigned, premature)
    ]
    assert results == [True, True, False, False]
    assert e.check(req(ip="198.51.100.1", headers=bob)).allowed, "bob still has one left"
    assert not e.check(req(ip="198.51.100.1", headers=bob)).allowed


def test_jwt_expiry_uses_the_engine_clock(make: MakeEngine, clock: FakeClock) -> None:
    e = make(JWT_RULES, env={"JWT_SECRET": SECRET})
    tok = {"authorization": "Bearer " + _token({"sub": "carol", "exp": int(clock()) + 30})}
    assert e.check(req(ip="198.51.100.3", headers=tok)).allowed
    clock.advance(31)
    for _ in range(2):
        assert e.check(req(ip="198.51.100.4", headers=tok)).allowed  # anonymous now: keyed by ip
    assert not e.check(req(ip="198.51.100.4", headers=tok)).allowed


def test_jwt_claim_drives_tiers(make: MakeEngine, clock: FakeClock) -> None:
    e = make(
        JWT_RULES.replace(
            'algorithm = "fixed-window"', 'algorithm = "fixed-window"\ntiers = { claim = "role", OWNER = 3 }'
        ),
        env={"JWT_SECRET": SECRET},
    )
    owner = {"authorization": "Bearer " + _token({"sub": "o", "role": "OWNER", "exp": int(clock()) + 60})}
    assert sum(e.check(req(headers=owner)).allowed for _ in range(10)) == 6
    fake = {"authorization": "Bearer " + _token({"sub": "m", "role": "OWNER"}, key="x" * 40)}
    assert sum(e.check(req(ip="198.51.100.20", headers=fake)).allowed for _ in range(10)) == 2


def _pem_public(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_rs256_public_key_file(make: MakeEngine, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "pub.pem").write_text(_pem_public(key))
    pol = tmp_path / "rw.toml"
    pol.write_text(
        '[jwt]\nalgorithms = ["RS256"]\npublic_key_file = "pub.pem"\n'
        '[[rule]]\nname = "u"\nkey = "jwt:sub"\nfallback = "skip"\nlimits = ["1/minute"]\n'
    )
    e = make(str(pol))
    good = {"authorization": "Bearer " + _token({"sub": "dave"}, key=key, alg="RS256")}
    assert [e.check(req(headers=good)).allowed for _ in range(2)] == [True, False]
    # the algorithm-confusion attack: HS256 signed with the public key as the secret
    evil = {"authorization": "Bearer " + _token({"sub": "dave"}, key="k" * 32, alg="HS256")}
    assert all(e.check(req(headers=evil)).allowed for _ in range(3)), "anonymous: the rule is skipped"


def test_jwks_file_with_kid(make: MakeEngine, tmp_path: Path) -> None:
    k1 = ec.generate_private_key(ec.SECP256R1())
    k2 = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": []}
    for kid, k in (("one", k1), ("two", k2)):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key()))
        jwk.update(kid=kid, alg="ES256", use="sig")
        jwks["keys"].append(jwk)
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    pol = tmp_path / "rw.toml"
    pol.write_text(
        '[jwt]\nalgorithms = ["ES256"]\njwks_file = "jwks.json"\n'
        '[[rule]]\nname = "u"\nkey = "jwt:sub"\nfallback = "skip"\nlimits = ["1/minute"]\n'
    )
    e = make(str(pol))
    t2 = {"authorization": "Bearer " + _token({"sub": "erin"}, key=k2, alg="ES256", headers={"kid": "two"})}
    assert [e.check(req(headers=t2)).allowed for _ in range(2)] == [True, False]
    wrong_kid = {"authorization": "Bearer " + _token({"sub": "erin"}, key=k2, alg="ES256", headers={"kid": "one"})}
    assert all(e.check(req(headers=wrong_kid)).allowed for _ in range(3))


@settings(max_examples=200, deadline=None)
@given(xff=st.text(max_size=300), fwd=st.text(max_size=300), peer=st.one_of(st.none(), st.text(max_size=50)))
def test_any_forwarding_header_resolves_to_a_hop_or_the_peer(xff: str, fwd: str, peer: str | None) -> None:
    proxies = loads_policy(PROXIED).settings.trusted_proxies
    for header, value in (("x-forwarded-for", xff), ("forwarded", fwd)):
        got = client_address(peer or "10.0.0.1", {header: value}, proxies, header)
        if got is not None:
            assert (
                str(got) in value
                or got == client_address(peer or "10.0.0.1", {}, proxies, header)
                or (got.version == 6 and got.ipv4_mapped is None and ":" in value)
            )


@pytest.mark.parametrize("n", [1, 3])
def test_untrusted_clients_never_exceed_the_limit_whatever_they_forward(make: MakeEngine, n: int) -> None:
    e = make(PROXIED.replace("3/minute", f"{n}/minute"))
    admitted = sum(
        e.check(req(ip="198.51.100.7", headers={"x-forwarded-for": v, "forwarded": v})).allowed
        for v in ("1.1.1.1", "for=2.2.2.2", "", ",,,", "::1", "10.0.0.1", "x" * 5000, "1.1.1.1, 2.2.2.2")
    )
    assert admitted == n
