"""The fuzz target (fuzz/fuzz_check.py) over a few thousand inputs, so CI runs it every time."""

from __future__ import annotations

import os
import time

import pytest

from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz_server.core.decision import Decision, Reason
from fuzz import fuzz_check
from fuzz.fuzz_check import FakeSource, UnexpectedAllow, check_decision, plain_inputs, seed_requests

SMOKE_INPUTS = 20_000
SMOKE_BUDGET_S = 10.0
# A fixed seed keeps CI reproducible; EXTAUTHZ_FUZZ_SEED explores other inputs locally.
SMOKE_SEED = int(os.environ.get("EXTAUTHZ_FUZZ_SEED", "20240501"))


def test_seed_requests_parse_and_pass() -> None:
    seeds = seed_requests()
    assert len(seeds) > 20
    for seed in seeds:
        external_auth_pb2.CheckRequest.FromString(seed)
        fuzz_check.test_one_input(seed)


def test_fuzz_target_over_random_and_mutated_inputs() -> None:
    deadline = time.monotonic() + SMOKE_BUDGET_S
    runs = 0
    for data in plain_inputs(SMOKE_INPUTS, SMOKE_SEED):
        if time.monotonic() >= deadline:
            break
        try:
            fuzz_check.test_one_input(data)
        except AssertionError as failure:
            pytest.fail(f"seed {SMOKE_SEED}, input {runs}: {data!r}: {failure}")
        runs += 1
    assert runs >= 2000


def test_fuzz_oracle_catches_an_allow_without_identity() -> None:
    # Guards the target itself: its check would notice a wrong allow.
    forged = Decision(allowed=True, status=200, reason=Reason.ALLOWED, route="admin")

    with pytest.raises(UnexpectedAllow):
        check_decision(forged, FakeSource())
