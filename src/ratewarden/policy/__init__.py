"""The policy file (docs/policy.md): model, loading with located errors, keys, matching."""

from __future__ import annotations

from ratewarden.policy.load import PolicyError, load_policy, loads_policy, parse_key
from ratewarden.policy.model import Ban, Policy, Rule, Settings

__all__ = ["Ban", "Policy", "PolicyError", "Rule", "Settings", "load_policy", "loads_policy", "parse_key"]
