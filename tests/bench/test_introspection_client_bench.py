"""`bench.introspection_client` runs both clients against the stand-in and prints a row for
each and their ratios. No speed is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_introspection_client_bench_has_a_row_per_client_and_their_ratio() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.introspection_client", "--calls", "20", "--rounds", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:3]]
    assert [row[0] for row in rows] == ["aiohttp", "KeptAliveHttp"]
    assert all(float(row[row.index("CPU") + 1]) > 0 for row in rows)
    assert "aiohttp / KeptAliveHttp: wall " in result.stdout
