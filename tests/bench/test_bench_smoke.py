"""The benchmark harness runs end to end (`python -m bench.run --quick`) and reports every row
with traffic and without errors. Speed is not asserted: CI machines vary too much. The
OPA-Envoy rows are left out (`--no-peers`): CI does not build Go, and
test_peer_decisions.py checks the peer's decisions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peer.lineup import JWT_CACHE_OFF, JWT_L1_HIT, LIMIT_J
from bench.run import (
    COLD,
    ENVOY_NOOP,
    ENVOY_OURS,
    ENVOY_OURS_HTTP,
    HTTP_L1_HIT,
    HTTP_L1_NEW_PATHS,
    L1_HIT,
    L1_HIT_AUDITED,
    L1_HIT_UVLOOP,
    L2_HIT,
    LIMIT_A,
    LIMIT_A_UVLOOP,
    LIMIT_B,
    LIMIT_H,
)

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 90

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(RUN_TIMEOUT_S + 30)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    for tool, package in (("h2load", "nghttp2-client"), ("wrk", "wrk")):
        if shutil.which(tool) is None:
            pytest.fail(f"no {tool} on PATH: install the Debian package {package} (.ci/run does)")
    json_path = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = [sys.executable, "-m", "bench.run", "--quick", "--duration", "1", "--warmup", "0.5"]
    argv.append("--no-peers")
    completed = subprocess.run(
        [*argv, "--json", str(json_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document: dict[str, object] = json.loads(json_path.read_text())
    return completed.stdout, document


def _results(document: dict[str, object]) -> list[dict[str, object]]:
    results = document["results"]
    assert isinstance(results, list)
    return results


def test_every_row_is_measured_and_printed(quick_run: tuple[str, dict[str, object]]) -> None:
    table, document = quick_run
    rows = {(r["section"], r["row"]) for r in _results(document)}
    expected = (
        {("grpc", row) for row in (LIMIT_A, L1_HIT, L1_HIT_AUDITED, L2_HIT, COLD)}
        | {("grpc-uvloop", row) for row in (LIMIT_A_UVLOOP, L1_HIT_UVLOOP)}
        | {("jwt", row) for row in (LIMIT_J, JWT_L1_HIT, JWT_CACHE_OFF)}
        | {("http", row) for row in (LIMIT_H, HTTP_L1_HIT, HTTP_L1_NEW_PATHS)}
        | {("envoy", row) for row in (LIMIT_B, ENVOY_OURS, ENVOY_OURS_HTTP, ENVOY_NOOP)}
    )
    assert rows == expected
    for _, row in expected:
        assert row in table
    assert "OPA-Envoy rows skipped: --no-peers" in table


def test_every_row_has_throughput_and_no_errors(
    quick_run: tuple[str, dict[str, object]],
) -> None:
    for result in _results(quick_run[1]):
        assert result["errors"] == 0, result
        assert isinstance(result["rps"], float)
        assert result["rps"] > 0, result
        assert isinstance(result["requests"], int)
        assert result["requests"] > 0, result
        assert isinstance(result["p99_ms"], float)
        assert result["p99_ms"] > 0, result


def test_rows_are_served_as_defined(quick_run: tuple[str, dict[str, object]]) -> None:
    served = {r["row"]: r["served_by"] for r in _results(quick_run[1])}
    assert served[L1_HIT] == "L1 100%"
    assert served[L1_HIT_AUDITED] == "L1 100%"
    assert served[L1_HIT_UVLOOP] == "L1 100%"
    assert served[COLD] == "provider 100%"
    # The jwt strategy's "provider" is the token's own signature, verified here.
    assert served[JWT_L1_HIT] == "L1 100%"
    assert served[JWT_CACHE_OFF] == "provider 100%"
    # L2 is mostly L2: a Redis call slower than cache.redis_timeout_ms on a loaded machine
    # sends the next second to the provider, which the row then reports.
    assert "L2" in str(served[L2_HIT])


def test_ratios_are_set_against_the_limit_of_each_section(
    quick_run: tuple[str, dict[str, object]],
) -> None:
    ratios = {r["row"]: r["ratio"] for r in _results(quick_run[1])}
    assert ratios[LIMIT_A] == ratios[LIMIT_A_UVLOOP] == ratios[LIMIT_J] == ratios[LIMIT_B] == 1.0
    assert all(isinstance(ratio, float) and ratio > 0 for ratio in ratios.values())
