"""One measured row of the benchmark, percentiles, and the printed table."""

from __future__ import annotations

import importlib
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Result:
    section: str  # "grpc" (h2load straight at the Check server) or "envoy" (wrk through Envoy)
    row: str
    clients: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # Which level answered the Checks (from the server's own counters), e.g. "L1 100%".
    served_by: str = ""
    # CPU seconds the server process used per wall-clock second of the run (1.0 = one core).
    server_cpu: float | None = None
    ratio: float | None = None  # req/s over the limit's req/s at the same clients
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def median_round(rounds: Sequence[Result]) -> Result:
    """The round with the median req/s (the lower middle one for an even count), noting the
    spread of the others."""
    ordered = sorted(rounds, key=lambda r: r.rps)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(ordered) > 1:
        spread = ", ".join(f"{r.rps:.0f}" for r in ordered)
        chosen.notes.append(f"req/s of the {len(ordered)} rounds: {spread}")
    return chosen


def set_ratios(results: Sequence[Result], limit_rows: dict[str, str]) -> None:
    """Fill `ratio` of each row against the limit row of its section at the same clients,
    where no ratio was set already (per round)."""
    limits = {(r.section, r.clients): r.rps for r in results if r.row == limit_rows.get(r.section)}
    for result in results:
        if result.ratio is not None:
            continue
        limit = limits.get((result.section, result.clients))
        if limit:
            result.ratio = result.rps / limit


def format_table(results: Sequence[Result]) -> str:
    width = max([34, *(len(r.row) for r in results)])
    header = (
        f"{'row':<{width}} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'x limit':>7} {'srv CPU':>7} {'errors':>6}  served by"
    )
    lines = [header, "-" * len(header)]
    section = ""
    for r in results:
        if r.section != section:
            if section:
                lines.append("")
            section = r.section
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        cpu = f"{r.server_cpu:.2f}" if r.server_cpu is not None else "-"
        lines.append(
            f"{r.row:<{width}} {r.clients:>7} {r.rps:>8.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{ratio:>7} {cpu:>7} {r.errors:>6}  {r.served_by}"
        )
    return "\n".join(lines)


def latency_summary(name: str, samples_us: Sequence[float], width: int = 34) -> str:
    """One line: median, p90 and p99 of latencies in microseconds."""
    ordered = sorted(samples_us)
    median = statistics.median(ordered)
    p90, p99 = percentile(ordered, 0.90), percentile(ordered, 0.99)
    return f"{name:<{width}} median {median:6.0f} µs  p90 {p90:6.0f}  p99 {p99:6.0f}"


def write_chart(results: Sequence[Result], path: Path) -> str:
    """Bars of req/s and p99 per row (and clients), to `path` (its suffix picks SVG or PNG);
    what was done, as a line to print. matplotlib is the `bench` extra, so it may be absent."""
    try:
        # Imported by name: mypy then needs no matplotlib where the extra is not installed.
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return "no chart: matplotlib is missing (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    labels = [f"{r.row} ({r.clients})" for r in results]
    positions = list(range(len(results)))[::-1]  # the first row at the top
    figure, (rps_axes, p99_axes) = pyplot.subplots(
        1, 2, sharey=True, figsize=(13, 1.5 + 0.3 * len(results))
    )
    rps_axes.barh(positions, [r.rps for r in results], color="tab:blue")
    rps_axes.set_xlabel("req/s (higher is better)")
    rps_axes.set_yticks(positions, labels, fontsize=8)
    p99_axes.barh(positions, [r.p99_ms for r in results], color="tab:orange")
    p99_axes.set_xlabel("p99 latency, ms (lower is better)")
    for axes in (rps_axes, p99_axes):
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return f"chart written to {path}"
