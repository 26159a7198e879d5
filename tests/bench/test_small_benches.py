"""The small in-process benches run and print their figures: `bench.routes` a row per route
count (every lookup it times checked to find, or not find, a route), `bench.decision_overhead`
its two routes with one Keycloak call, `bench.proof_overhead` a row per proof algorithm
(every proof accepted, or it exits non-zero), `bench.cold_decision` both figures against the real
Keycloak with every Check asking it. No speed is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.opa_envoy import cached_binary
from tests.support.keycloak import Keycloak

REPO = Path(__file__).resolve().parents[2]


def run_bench(module: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <arguments>` from the repository, as its README line says."""
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_route_count_gets_a_row() -> None:
    result = run_bench("bench.routes", "--sizes", "10,400", "--lookups", "50", "--rounds", "2")

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:3]]
    assert [row[0] for row in rows] == ["10", "400"]
    assert all(float(value) > 0 for row in rows for value in row[2:])


def test_the_decision_overhead_bench_runs_with_one_keycloak_call() -> None:
    result = run_bench("bench.decision_overhead", "--calls", "200", "--rounds", "2")

    assert result.returncode == 0, result.stderr
    assert "added by the cached decision" in result.stdout
    assert "UMA calls: 1 " in result.stdout


def test_the_proof_overhead_bench_has_a_row_per_algorithm() -> None:
    result = run_bench("bench.proof_overhead", "--calls", "50", "--rounds", "2")

    assert result.returncode == 0, result.stderr
    rows = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("DPoP ")]
    assert rows == ["ES256", "PS256", "EdDSA"]
    assert "goal: a proof adds at most 150 µs" in result.stdout


@pytest.mark.keycloak
def test_the_cold_decision_bench_asks_keycloak_for_every_check(keycloak: Keycloak) -> None:
    result = run_bench(
        "bench.cold_decision", "--calls", "5", "--rounds", "1", "--base-url", keycloak.base_url
    )

    assert result.returncode == 0, result.stderr
    assert "added by our decision path" in result.stdout
    # 30 warm-up Checks and 5 timed ones, none answered from a cache.
    assert "UMA calls by the Checks: 35" in result.stdout


@pytest.mark.skipif(cached_binary() is None, reason="the OPA-Envoy plugin is not built here")
def test_the_workers_bench_compares_one_and_two_cores_of_each_server() -> None:
    result = run_bench("bench.workers", "--duration", "0.5", "--rounds", "1")

    assert result.returncode == 0, result.stderr
    table = result.stdout.split("row ", 1)[1].splitlines()
    rows = [line for line in table if "(s)" in line or "GOMAXPROCS" in line]
    assert len(rows) == 6
    assert all(float(row.split()[-2]) > 0 for row in rows)
