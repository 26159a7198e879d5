"""The pinned rows of the benchmark: our server with the `jwt` strategy beside a pinned
no-op, and the OPA-Envoy plugin doing the same job in Rego beside its allow-all limit. All of
them verify real RS256 tokens (bench/peer/signing.py) from a local issuer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.check_bodies import write_body
from bench.opa_envoy import OpaEnvoyProcess, PeerUnavailable, ensure_binary
from bench.peer.cpus import Pinning
from bench.peer.decisions import (
    DecisionCase,
    DecisionMismatch,
    assert_allows,
    assert_same_decisions,
    decision_cases,
)
from bench.peer.policy_data import policy_data
from bench.peer.signing import (
    AUDIENCE,
    DecisionTokens,
    IssuerServer,
    SigningKey,
    access_token_claims,
)
from bench.stack import GrpcTarget, NoopProcess, assert_allowed, server_config_text
from tests.support.authz_process import AuthzProcess

LIMIT_J = "J  limit: no-op Check server, pinned"
JWT_L1_HIT = "ours, jwt strategy, L1 hit"
JWT_CACHE_OFF = "ours, jwt strategy, cache off"
OPA_ALLOW_ALL = "OPA-Envoy, allow-all"
# No "JWT cache on" row: the plugin does not apply OPA's io.jwt cache (opa_envoy.py).
OPA_SAME_JOB = "OPA-Envoy, same job (no JWT cache)"
OPA_LEAN = "OPA-Envoy, same job, lean policy"
JWT_SECTION = "jwt"
OPA_SECTION = "opa"
LIMIT_ROWS = {JWT_SECTION: LIMIT_J, OPA_SECTION: OPA_ALLOW_ALL}

POLICY_DIR = Path(__file__).resolve().parent
AUTHZ_POLICY = POLICY_DIR / "authz.rego"
ALLOW_ALL_POLICY = POLICY_DIR / "allow_all.rego"
AUTHZ_DECISION = "extauthz/bench/authz/result"
LEAN_POLICY = POLICY_DIR / "authz_lean.rego"
LEAN_DECISION = "extauthz/bench/lean/result"
ALLOW_ALL_DECISION = "extauthz/bench/allow_all/allow"
EXPECTED_ROLES = "creator"


def jwt_provider(jwks_uri: str) -> dict[str, object]:
    """Our `provider` section for the jwt rows. The audience is checked because OPA's
    io.jwt.decode_verify refuses a token with `aud` unless told which audience to accept."""
    return {"strategy": "jwt", "jwks_uri": jwks_uri, "jwt": {"audiences": [AUDIENCE]}}


def jwt_server_config(issuer: IssuerServer, *, ttl_seconds: float) -> str:
    """Our server's configuration for the jwt rows, trusting `issuer`'s keys; the audit line
    on, as it is by default (the plugin runs as shipped too: decision logs off)."""
    return server_config_text(
        issuer.issuer, ttl_seconds=ttl_seconds, provider=jwt_provider(issuer.jwks_uri), audit=True
    )


def start_same_job_peer(
    binary: Path,
    workdir: Path,
    our_config: str,
    jwks_text: str,
    *,
    pinning: Pinning,
    lean: bool = False,
) -> OpaEnvoyProcess:
    """The plugin with authz.rego (or, `lean`, authz_lean.rego), deciding from the
    configuration our server runs with."""
    return OpaEnvoyProcess.start(
        binary,
        workdir,
        policy_files=[LEAN_POLICY if lean else AUTHZ_POLICY],
        decision_path=LEAN_DECISION if lean else AUTHZ_DECISION,
        data=policy_data(our_config, jwks_text),
        pinning=pinning,
    )


@dataclass(slots=True)
class PeerLineup:
    pinning: Pinning
    issuer: IssuerServer
    one_token: Path  # the body every client of an L1 or allow-all row posts
    bodies: list[Path]  # a distinct token per client, for the rows that verify each
    noop: NoopProcess
    jwt_l1: AuthzProcess
    jwt_cache_off: AuthzProcess
    opa: dict[str, OpaEnvoyProcess] = field(default_factory=dict)
    skipped: str | None = None  # why the OPA rows are not there, when they are not
    failed: str | None = None  # set when the peer decided differently from ours

    @property
    def servers(self) -> list[AuthzProcess]:
        return [self.jwt_l1, self.jwt_cache_off]

    def rows_for(self, level: int) -> list[GrpcTarget]:
        one, each = [self.one_token] * level, self.bodies[:level]
        rows = [
            self._row(JWT_SECTION, LIMIT_J, self.noop.grpc_port, self.noop.process.pid, one),
            self._our_row(JWT_L1_HIT, self.jwt_l1, one),
            self._our_row(JWT_CACHE_OFF, self.jwt_cache_off, each),
        ]
        bodies_of = {OPA_ALLOW_ALL: one, OPA_SAME_JOB: each, OPA_LEAN: each}
        for row, peer in self.opa.items():
            rows.append(
                self._row(OPA_SECTION, row, peer.grpc_port, peer.process.pid, bodies_of[row])
            )
        return rows

    def _row(
        self,
        section: str,
        row: str,
        port: int,
        pid: int,
        bodies: list[Path],
        server: AuthzProcess | None = None,
    ) -> GrpcTarget:
        return GrpcTarget(section, row, port, bodies, pid, server, pinned=self.pinning.active)

    def _our_row(self, row: str, server: AuthzProcess, bodies: list[Path]) -> GrpcTarget:
        return self._row(JWT_SECTION, row, server.grpc_port, server.process.pid, bodies, server)

    def stop(self) -> None:
        for peer in self.opa.values():
            peer.stop()
        for server in self.servers:
            server.stop()
        self.noop.stop()
        self.issuer.stop()


def start_lineup(
    workdir: Path, clients: int, *, peers: bool, progress: Callable[[str], None]
) -> PeerLineup:
    """Our jwt rows always; the OPA rows when `peers` and the plugin builds, starts and
    decides every case as ours does."""
    workdir.mkdir(parents=True, exist_ok=True)
    pinning = Pinning.detect()
    key = SigningKey.generate()
    jwks_text = key.jwks_text()
    issuer = IssuerServer(jwks_text)
    tokens = [key.sign(access_token_claims(issuer.issuer, i)) for i in range(clients)]
    bodies = [write_body(workdir / f"jwt-{i}.grpc", token) for i, token in enumerate(tokens)]
    started: list[AuthzProcess] = []
    noop: NoopProcess | None = None
    try:
        noop = NoopProcess.start(workdir / "noop-pinned")
        l1_config = jwt_server_config(issuer, ttl_seconds=3600)
        started.append(AuthzProcess.start(l1_config, _dir(workdir / "jwt-l1")))
        # ttl 0 keeps nothing: every Check verifies its token's signature.
        off_config = jwt_server_config(issuer, ttl_seconds=0)
        started.append(AuthzProcess.start(off_config, _dir(workdir / "jwt-cache-off")))
        for pid in (noop.process.pid, *(server.process.pid for server in started)):
            pinning.pin_server(pid)
        for server in started:
            for token in tokens:
                assert_allowed(server.grpc_port, token, EXPECTED_ROLES)
    except BaseException:
        for server in started:
            server.stop()
        if noop is not None:
            noop.stop()
        issuer.stop()
        raise
    lineup = PeerLineup(pinning, issuer, bodies[0], bodies, noop, started[0], started[1])
    if not peers:
        lineup.skipped = "OPA-Envoy rows skipped: --no-peers"
        return lineup
    try:
        cases = decision_cases(DecisionTokens.make(key, issuer.issuer))
        # The policy's data comes from the cache-off configuration; only `cache` differs.
        _start_opa(lineup, workdir, off_config, jwks_text, tokens, cases, progress)
        progress("OPA-Envoy decides every case as ours does")
    except PeerUnavailable as exc:
        lineup.skipped = f"OPA-Envoy rows skipped: {exc}"
    except DecisionMismatch as exc:
        lineup.failed = f"OPA-Envoy rows failed: {exc}"
    except BaseException:
        lineup.stop()
        raise
    if lineup.skipped or lineup.failed:
        for peer in lineup.opa.values():
            peer.stop()
        lineup.opa.clear()
        progress(lineup.skipped or lineup.failed or "")
    return lineup


def _start_opa(
    lineup: PeerLineup,
    workdir: Path,
    our_config: str,
    jwks_text: str,
    tokens: list[str],
    cases: Sequence[DecisionCase],
    progress: Callable[[str], None],
) -> None:
    built = ensure_binary(progress)
    if built.seconds:
        progress(f"OPA-Envoy plugin built in {built.seconds:.0f} s: {built.path}")
    binary, pinning = built.path, lineup.pinning
    lineup.opa[OPA_ALLOW_ALL] = OpaEnvoyProcess.start(
        binary,
        workdir / "opa-allow-all",
        policy_files=[ALLOW_ALL_POLICY],
        decision_path=ALLOW_ALL_DECISION,
        pinning=pinning,
    )
    same_job = start_same_job_peer(
        binary, workdir / "opa-same-job", our_config, jwks_text, pinning=pinning
    )
    lineup.opa[OPA_SAME_JOB] = same_job
    lean = start_same_job_peer(
        binary, workdir / "opa-lean", our_config, jwks_text, pinning=pinning, lean=True
    )
    lineup.opa[OPA_LEAN] = lean
    for ours in lineup.servers:
        for row, peer in ((OPA_SAME_JOB, same_job), (OPA_LEAN, lean)):
            assert_same_decisions(ours.grpc_port, peer.grpc_port, cases, row)
    for row, peer in lineup.opa.items():
        assert_allows(peer.grpc_port, tokens, row)


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
