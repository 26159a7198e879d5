"""How each server scales from one core to two: ours with `server.workers` 1 and 2, the
OPA-Envoy plugin (the same job, bench/peer/authz.rego) with GOMAXPROCS 1 and 2, each asked
by 10 h2load clients with a token per client, in interleaved rounds.

    .venv/bin/python -m bench.workers [--duration 5] [--rounds 3]

Nothing is pinned: two workers need both CPUs, which h2load shares with them, so the second
core is never the server's alone. The figures say how much of a second core each server
turns into Checks on this machine, not what a dedicated core would give.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.check_bodies import write_body
from bench.h2load import run_clients
from bench.opa_envoy import OpaEnvoyProcess, ensure_binary
from bench.peer.cpus import Pinning
from bench.peer.decisions import assert_same_decisions, decision_cases
from bench.peer.lineup import AUTHZ_DECISION, AUTHZ_POLICY, jwt_provider
from bench.peer.policy_data import policy_data
from bench.peer.signing import DecisionTokens, IssuerServer, SigningKey, access_token_claims
from tests.support.authz_process import AuthzProcess
from tests.support.configs import seed_config_text
from tests.support.net import free_port

CLIENTS = 10


def our_config(issuer: IssuerServer, workers: int, ttl_seconds: float) -> str:
    """Fixed ports: workers share them (SO_REUSEPORT)."""
    server = {
        "workers": workers,
        "grpc_listen": f"127.0.0.1:{free_port()}",
        "http_listen": f"127.0.0.1:{free_port()}",
    }
    return seed_config_text(
        issuer.issuer,
        ttl_seconds=ttl_seconds,
        server=server,
        provider=jwt_provider(issuer.jwks_uri),
        logging={"audit": False},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    key = SigningKey.generate()
    jwks_text = key.jwks_text()
    issuer = IssuerServer(jwks_text)
    tokens = [key.sign(access_token_claims(issuer.issuer, i)) for i in range(CLIENTS)]
    bodies = [write_body(workdir / f"token-{i}.grpc", token) for i, token in enumerate(tokens)]
    binary = ensure_binary(print).path
    servers: dict[str, AuthzProcess] = {}
    peers: dict[str, OpaEnvoyProcess] = {}
    try:
        for workers in (1, 2):
            for label, ttl in (("cache off", 0.0), ("L1 hit", 3600.0)):
                directory = workdir / f"ours-{workers}-{ttl:g}"
                directory.mkdir()
                text = our_config(issuer, workers, ttl)
                servers[f"ours, {label}, {workers} worker(s)"] = AuthzProcess.start(text, directory)
            peers[f"OPA-Envoy, same job, GOMAXPROCS={workers}"] = OpaEnvoyProcess.start(
                binary,
                workdir / f"opa-{workers}",
                policy_files=[AUTHZ_POLICY],
                decision_path=AUTHZ_DECISION,
                data=policy_data(our_config(issuer, 1, 0.0), jwks_text),
                gomaxprocs=workers,
                pinning=Pinning(None),
            )
        cases = decision_cases(DecisionTokens.make(key, issuer.issuer))
        reference = next(iter(servers.values()))
        for peer in peers.values():
            assert_same_decisions(reference.grpc_port, peer.grpc_port, cases, "OPA-Envoy")
        ports = {name: s.grpc_port for name, s in servers.items()}
        ports |= {name: p.grpc_port for name, p in peers.items()}
        rates: dict[str, list[float]] = {name: [] for name in ports}
        for round_index in range(args.rounds):
            for index, (name, port) in enumerate(ports.items()):
                print(f"… {name}, round {round_index + 1}", flush=True)
                run = run_clients(
                    port,
                    bodies,
                    duration_s=args.duration,
                    warmup_s=1.0,
                    workdir=workdir / f"h2load-{round_index}-{index}",
                )
                if run.errors:
                    raise SystemExit(f"{name}: {run.errors} errors")
                rates[name].append(run.rps)
    finally:
        for peer in peers.values():
            peer.stop()
        for server in servers.values():
            server.stop()
        issuer.stop()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{'row':<40} {'req/s':>8} {'2 / 1':>6}")
    for name, value in medians.items():
        one = medians[name.replace("2 worker(s)", "1 worker(s)").replace("=2", "=1")]
        print(f"{name:<40} {value:>8.0f} {value / one:>6.2f}")
    print(f"medians of {args.rounds} rounds of {args.duration:g} s, {CLIENTS} clients, unpinned")


if __name__ == "__main__":
    main()
