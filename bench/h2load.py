"""Drive h2load (nghttp2) at a gRPC Check endpoint over h2c and read back what it measured.

h2load posts the same body on every request, so a client can only ever send one token. To
have several tokens in flight, each client is its own h2load process (`-c 1 -m 1`) with its
own body file; every row uses this same shape, so the client-side cost is the same for all.
Per-request times come from each process's `--log-file` (main phase only, warm-up excluded).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.check_bodies import CHECK_PATH

_EXTRA_WAIT_S = 30.0
_FINISHED = re.compile(r"^finished in [\d.]+m?s, ([\d.]+) req/s", re.MULTILINE)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)


class H2loadError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class H2loadRun:
    rps: float  # sum over the clients, each over its own main phase
    requests: int  # succeeded in the main phase
    errors: int  # failed, errored, timed out or not 2xx
    latencies_us: list[int]  # sorted, one per completed request of the main phase


def h2load_path() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise H2loadError("no h2load on PATH (Debian package nghttp2-client)")
    return found


def run_clients(
    port: int, bodies: Sequence[Path], *, duration_s: float, warmup_s: float, workdir: Path
) -> H2loadRun:
    """One h2load process per body, all at once: `len(bodies)` concurrent sequential clients."""
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}{CHECK_PATH}"
    processes: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    try:
        for index, body in enumerate(bodies):
            out_path, log_path = workdir / f"h2load-{index}.out", workdir / f"h2load-{index}.log"
            argv = [
                h2load_path(),
                f"--duration={round(duration_s * 1000)}ms",
                f"--warm-up-time={round(warmup_s * 1000)}ms",
                "--clients=1",
                "--threads=1",
                "--max-concurrent-streams=1",
                f"--data={body}",
                "--header=content-type: application/grpc",
                "--header=te: trailers",
                f"--log-file={log_path}",
                url,
            ]
            with out_path.open("wb") as out:
                process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            processes.append((process, out_path, log_path))
        for process, out_path, _ in processes:
            code = process.wait(timeout=duration_s + warmup_s + _EXTRA_WAIT_S)
            if code != 0:
                raise H2loadError(f"h2load exited with {code}:\n{out_path.read_text()[-2000:]}")
    finally:
        for process, _, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    rps, requests, errors = 0.0, 0, 0
    latencies: list[int] = []
    for _, out_path, log_path in processes:
        client_rps, client_requests, client_errors = parse_output(out_path.read_text())
        rps += client_rps
        requests += client_requests
        errors += client_errors
        latencies += parse_log(log_path.read_text())
    latencies.sort()
    return H2loadRun(rps=rps, requests=requests, errors=errors, latencies_us=latencies)


def sequential_latencies(
    url: str,
    body: Path,
    headers: Sequence[str],
    *,
    requests: int,
    workdir: Path,
    http1: bool = False,
) -> list[int]:
    """µs per request of one client sending `requests` POSTs of `body` one after another
    (`-c 1 -m 1`), over h2c or, `http1`, HTTP/1.1 kept alive: a latency a C client sees,
    so no Python client's own time is in it. Raises H2loadError if any request failed."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path, out_path = workdir / "h2load.log", workdir / "h2load.out"
    argv = [
        h2load_path(),
        f"--requests={requests}",
        "--clients=1",
        "--threads=1",
        "--max-concurrent-streams=1",
        f"--data={body}",
        f"--log-file={log_path}",
        *(f"--header={header}" for header in headers),
        *(["--h1"] if http1 else []),
        url,
    ]
    with out_path.open("wb") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    text = out_path.read_text()
    if code != 0:
        raise H2loadError(f"h2load exited with {code}:\n{text[-2000:]}")
    _rps, succeeded, errors = parse_output(text, protocol="http/1.1" if http1 else "h2c")
    if errors or succeeded != requests:
        raise H2loadError(f"{errors} of {requests} requests failed:\n{text[-2000:]}")
    return parse_log(log_path.read_text())


def parse_output(text: str, protocol: str = "h2c") -> tuple[float, int, int]:
    """(req/s, succeeded, errors) from h2load's summary; insists the session spoke
    `protocol` (h2c unless told)."""
    finished, counts, statuses = (
        _FINISHED.search(text),
        _REQUESTS.search(text),
        _STATUS.search(text),
    )
    if finished is None or counts is None or statuses is None:
        raise H2loadError(f"unexpected h2load output:\n{text[-2000:]}")
    if f"Application protocol: {protocol}" not in text:
        raise H2loadError(f"h2load did not speak {protocol}:\n{text[-2000:]}")
    _total, started, done, succeeded, failed, errored, timeout = map(int, counts.groups())
    _ok, s3xx, s4xx, s5xx = map(int, statuses.groups())
    errors = failed + errored + timeout + (started - done) + s3xx + s4xx + s5xx
    return float(finished.group(1)), succeeded, errors


def parse_log(text: str) -> list[int]:
    """Durations in µs of the 2xx requests in an h2load `--log-file` (status -1 is a failure)."""
    durations = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1].startswith("2"):
            durations.append(int(fields[2]))
    return durations
