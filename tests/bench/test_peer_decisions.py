"""The Rego policy of the peer rows (bench/peer/authz.rego) decides as our server with the
`jwt` strategy does, on the benchmark's configuration; and the comparison that guards the
peer rows does catch a peer that decides otherwise.

The live tests need the OPA-Envoy plugin built by `python -m bench.run` (cached outside the
repository); they are skipped without it rather than building Go here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from bench.opa_envoy import OpaEnvoyProcess, cached_binary
from bench.peer.cpus import Pinning
from bench.peer.decisions import (
    DecisionMismatch,
    assert_same_decisions,
    decision_cases,
    differences,
    verdicts,
)
from bench.peer.lineup import (
    ALLOW_ALL_DECISION,
    ALLOW_ALL_POLICY,
    jwt_provider,
    jwt_server_config,
    start_same_job_peer,
)
from bench.peer.policy_data import PolicyGap, policy_data
from bench.peer.signing import DecisionTokens, IssuerServer, SigningKey
from bench.stack import server_config_text
from tests.support.authz_process import AuthzProcess
from tests.support.configs import SEED_ROUTES

NO_PINNING = Pinning(None)
IDENTITY_HEADERS = (
    "x-auth-client",
    "x-auth-email",
    "x-auth-roles",
    "x-auth-subject",
    "x-auth-username",
)


@dataclass(frozen=True, slots=True)
class Servers:
    ours: AuthzProcess
    same_job: OpaEnvoyProcess
    allow_all: OpaEnvoyProcess
    tokens: DecisionTokens
    lean: OpaEnvoyProcess


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    binary = cached_binary()
    if binary is None:
        pytest.skip("no OPA-Envoy plugin built yet (python -m bench.run builds and caches it)")
    workdir = tmp_path_factory.mktemp("peer")
    key = SigningKey.generate()
    issuer = IssuerServer(key.jwks_text())
    config = jwt_server_config(issuer, ttl_seconds=60)
    (workdir / "ours").mkdir()
    started: list[AuthzProcess | OpaEnvoyProcess] = []
    try:
        ours = AuthzProcess.start(config, workdir / "ours")
        started.append(ours)
        same_job = start_same_job_peer(
            binary,
            workdir / "opa",
            config,
            key.jwks_text(),
            pinning=NO_PINNING,
        )
        started.append(same_job)
        allow_all = OpaEnvoyProcess.start(
            binary,
            workdir / "opa-allow-all",
            policy_files=[ALLOW_ALL_POLICY],
            decision_path=ALLOW_ALL_DECISION,
            pinning=NO_PINNING,
        )
        started.append(allow_all)
        lean = start_same_job_peer(
            binary, workdir / "opa-lean", config, key.jwks_text(), pinning=NO_PINNING, lean=True
        )
        started.append(lean)
        tokens = DecisionTokens.make(key, issuer.issuer)
        yield Servers(ours, same_job, allow_all, tokens, lean)
    finally:
        for process in started:
            process.stop()
        issuer.stop()


def test_the_policy_decides_every_case_as_ours(servers: Servers) -> None:
    cases = decision_cases(servers.tokens)
    decided = assert_same_decisions(
        servers.ours.grpc_port, servers.same_job.grpc_port, cases, "authz.rego"
    )
    by_case = dict(zip((case.name for case in cases), decided, strict=True))
    allowed = by_case["valid token, allowed route"]
    assert allowed.allowed
    assert dict(allowed.upstream_headers) == {
        "x-auth-subject": "8d3c0a52-15a2-459b-9b29-3bce996095a0",
        "x-auth-username": "bob",
        "x-auth-email": "bob@example.com",
        "x-auth-roles": "creator",
        "x-auth-client": "web-app",
    }
    forbidden = by_case["valid token, forbidden route"]
    assert (forbidden.allowed, forbidden.http_status, forbidden.error) == (
        False,
        403,
        "insufficient_scope",
    )
    for name in ("no token", "bad signature", "expired token"):
        denied = by_case[name]
        assert (denied.allowed, denied.http_status) == (False, 401), name
        assert denied.challenge is not None
        assert denied.challenge.startswith('Bearer realm="bench"'), name
    public = by_case["public route, no token"]
    assert public.allowed
    assert public.removed_headers == IDENTITY_HEADERS


def test_the_lean_policy_decides_every_case_as_ours_and_the_full_one(servers: Servers) -> None:
    cases = decision_cases(servers.tokens)
    lean = assert_same_decisions(
        servers.ours.grpc_port, servers.lean.grpc_port, cases, "authz_lean.rego"
    )
    full = verdicts(servers.same_job.grpc_port, cases)
    assert lean == full
    assert [verdict.allowed for verdict in lean] == [True, False, False, False, False, True]


def test_the_same_job_policy_denies_what_an_allow_all_peer_lets_through(servers: Servers) -> None:
    cases = decision_cases(servers.tokens)
    found = differences(
        cases, verdicts(servers.ours.grpc_port, cases), verdicts(servers.allow_all.grpc_port, cases)
    )
    # The allow-all peer agrees only where ours allows too; its allow sets no headers, so
    # even the allowed route differs.
    assert [line.split(":")[0] for line in found] == [
        "valid token, allowed route",
        "valid token, forbidden route",
        "no token",
        "bad signature",
        "expired token",
        "public route, no token",
    ]
    with pytest.raises(DecisionMismatch, match="bad signature: ours deny 401"):
        assert_same_decisions(
            servers.ours.grpc_port, servers.allow_all.grpc_port, cases, "allow-all"
        )


def _config_text(**changes: object) -> str:
    """The jwt rows' configuration of our server, with `section.key` values replaced."""
    config = server_config_text(
        "http://127.0.0.1:1/realms/bench",
        ttl_seconds=60,
        provider=jwt_provider("http://127.0.0.1:1/realms/bench/protocol/openid-connect/certs"),
    )
    document = yaml.safe_load(config)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = document
        for name in parents:
            target = target[name]
        target[last] = value
    return yaml.safe_dump(document)


def test_policy_data_carries_our_routes_mapping_and_headers() -> None:
    data = policy_data(_config_text(), '{"keys": []}')["extauthz_bench"]
    assert [route["path_prefix"] for route in data["routes"]] == [
        route["path_prefix"] for route in SEED_ROUTES
    ]
    assert data["routes"][2]["methods"] == ["GET", "POST", "PUT", "DELETE"]
    assert "methods" not in data["routes"][3]
    assert data["role_mapping"]["manager"] == ["creator"]
    assert data["realm"] == "bench"
    assert data["audience"] == "ext-authz"
    assert sorted(data["headers"].values()) == list(IDENTITY_HEADERS)


@pytest.mark.parametrize(
    "changes",
    [
        {"provider.strategy": "introspection"},
        {"roles.pass_through_unmapped": True},
        {"roles.mapping": {"Manager for {region}": ["manager:{region}"]}},
        {"routes": [{"name": "r", "path_prefix": "/", "scopes": ["read"]}]},
        {"headers.strip_authorization": True},
    ],
)
def test_policy_data_refuses_what_the_policy_does_not_implement(
    changes: dict[str, object],
) -> None:
    with pytest.raises(PolicyGap):
        policy_data(_config_text(**changes), '{"keys": []}')
