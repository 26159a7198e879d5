"""Drive wrk (HTTP/1.1 keep-alive) at Envoy and read its summary and latency distribution."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_EXTRA_WAIT_S = 30.0
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkRun:
    rps: float
    requests: int
    duration_s: float
    errors: int  # socket errors and non-2xx/3xx answers
    p50_ms: float
    p99_ms: float


def run(
    url: str,
    headers: Mapping[str, str],
    *,
    duration_s: float,
    connections: int,
    threads: int,
    cpu: int | None = None,
    script: Path | None = None,
) -> WrkRun:
    """`cpu`: pin wrk to that CPU (with taskset, where it exists); `script`: a wrk Lua
    script (for instance one that writes each request's path)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("no wrk on PATH (Debian package wrk)")
    pinned = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []
    argv = [
        *pinned,
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        "--timeout=2s",
        "--latency",
    ]
    if script is not None:
        argv.append(f"--script={script}")
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    result = subprocess.run(
        [*argv, url],
        capture_output=True,
        text=True,
        timeout=duration_s + _EXTRA_WAIT_S,
        check=False,
    )
    if result.returncode != 0:
        raise WrkError(f"wrk exited with {result.returncode}:\n{result.stderr}{result.stdout}")
    return parse_output(result.stdout)


def numbered_paths_script(path: Path, prefix: str) -> Path:
    """Write a wrk script whose requests go to `prefix`1, `prefix`2, …: a new path each time,
    the request otherwise as given on the command line."""
    path.write_text(
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        f'  return wrk.format(nil, "{prefix}" .. n)\n'
        "end\n"
    )
    return path


def parse_output(text: str) -> WrkRun:
    percentiles = {int(p): float(v) * _UNITS_MS[unit] for p, v, unit in _PERCENTILE.findall(text)}
    requests, rps = _REQUESTS.search(text), _RPS.search(text)
    if requests is None or rps is None or set(percentiles) != {50, 99}:
        raise WrkError(f"unexpected wrk output:\n{text}")
    errors = 0
    if (socket_errors := _SOCKET_ERRORS.search(text)) is not None:
        errors += sum(map(int, socket_errors.groups()))
    if (non_2xx := _NON_2XX.search(text)) is not None:
        errors += int(non_2xx.group(1))
    return WrkRun(
        rps=float(rps.group(1)),
        requests=int(requests.group(1)),
        duration_s=float(requests.group(2)) * _UNITS_MS[requests.group(3)] / 1000,
        errors=errors,
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
    )
