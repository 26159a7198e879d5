"""Which HTTP server for the authorization listener: the same no-op (200 with five identity
headers) on each candidate stack, driven by wrk (`-t1 -c10`, keep-alive, a 900-byte bearer
token), server pinned to CPU 0 and wrk to CPU 1 where `taskset` exists.

    .venv/bin/python -m bench.http_servers [--duration 5] [--rounds 3]

Candidates: aiohttp's low-level server, and ours (`http_server.HttpServer`, an asyncio
protocol over httptools), each on asyncio and on uvloop. Rounds interleave the candidates;
the figures are each one's median round, in requests per second.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import wrk
from bench.check_bodies import jwt_shaped_token
from bench.stack import NoopProcess

CANDIDATES = [
    ("aiohttp low-level", "aiohttp", "asyncio"),
    ("aiohttp low-level, uvloop", "aiohttp", "uvloop"),
    ("ours (httptools)", "ours", "asyncio"),
    ("ours (httptools), uvloop", "ours", "uvloop"),
]


def _pin(pid: int, cpu: int) -> None:
    if shutil.which("taskset"):
        subprocess.run(
            ["taskset", "-p", "-c", str(cpu), str(pid)], capture_output=True, check=False
        )


def measure(duration_s: float, rounds: int) -> dict[str, float]:
    headers = {"authorization": f"Bearer {jwt_shaped_token(0)}"}
    rps: dict[str, list[float]] = {name: [] for name, *_ in CANDIDATES}
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(rounds):
            for name, stack, loop in CANDIDATES:
                noop = NoopProcess.start(
                    Path(workdir) / f"{round_index}-{stack}-{loop}",
                    loop,
                    over_http=True,
                    http_stack=stack,
                )
                try:
                    _pin(noop.process.pid, 0)
                    url = f"http://127.0.0.1:{noop.grpc_port}/envoy/api/forms/1"
                    wrk.run(url, headers, duration_s=1, connections=10, threads=1, cpu=1)
                    run = wrk.run(
                        url, headers, duration_s=duration_s, connections=10, threads=1, cpu=1
                    )
                    if run.errors:
                        raise RuntimeError(f"{name}: {run.errors} errors")
                    rps[name].append(run.rps)
                finally:
                    noop.stop()
    return {name: statistics.median(values) for name, values in rps.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures = measure(args.duration, args.rounds)
    base = figures[CANDIDATES[0][0]]
    for name, value in figures.items():
        print(f"{name:<28} {value:10.0f} req/s  {value / base:5.2f} x aiohttp")


if __name__ == "__main__":
    main()
