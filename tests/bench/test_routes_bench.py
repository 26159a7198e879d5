"""`python -m bench.routes` runs and prints a row per route count; every lookup it times is
checked to find (or not find) a route, so the figures are of real matches. No speed asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_route_count_gets_a_row() -> None:
    command = ["-m", "bench.routes", "--sizes", "10,400", "--lookups", "50", "--rounds", "2"]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:3]]
    assert [row[0] for row in rows] == ["10", "400"]
    assert all(float(value) > 0 for row in rows for value in row[2:])
