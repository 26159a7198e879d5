"""Throughput and latency of extauthz-server beside its limits, in one run (issue #7).

    .venv/bin/python -m bench.run [--quick] [--duration S] [--levels 2,10,50] [--json out.json]
        [--no-peers] [--chart out.svg]

gRPC rows (h2load over h2c straight at the Check endpoint, concurrent sequential clients):
  Limit A: the no-op Check server (grpc.aio, one process); ours on an L1 hit; ours on an L2
  hit (Redis); ours cold (every Check introspects at the local provider stand-in).
Pinned gRPC rows (server on CPU 0, h2load on CPU 1), real RS256 tokens:
  Limit J: the no-op Check server; ours with the `jwt` strategy, L1 hit and cache off.
  Limit: the OPA-Envoy plugin allowing all; the plugin doing our jwt job in Rego
  (bench/peer/authz.rego). `--no-peers` leaves the OPA-Envoy rows out.
HTTP rows (wrk straight at the HTTP authorization listener, `/envoy/<path>`):
  Limit H: a no-op HTTP server on the same stack (edges/http_server.py); ours on an L1 hit
  (the same request again and again: repeated); ours on an L1 hit with a new path each time.
End-to-end rows (wrk through a real Envoy whose only route is a direct_response):
  Limit B: Envoy without ext_authz; Envoy + ext_authz to ours (L1 hit), over gRPC and over
  HTTP; Envoy + ext_authz to the no-op server.
See bench/README.md for the definitions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import envoy_variants, h2load, wrk
from bench.check_bodies import CLIENT_HEADERS, REQUEST_PATH, jwt_shaped_token, write_body
from bench.peer import lineup as peer
from bench.peer.cpus import Pinning
from bench.results import (
    Result,
    format_table,
    median_round,
    percentile,
    set_ratios,
    write_chart,
)
from bench.stack import (
    GrpcTarget,
    NoopProcess,
    assert_allowed,
    cpu_seconds,
    error_lines,
    scrape,
    served_by,
    start_server,
    start_standin,
)
from tests.support.authz_process import AuthzProcess
from tests.support.redis_server import RedisServer

LIMIT_A = "A  limit: no-op Check server"
LIMIT_A_UVLOOP = "A' limit: no-op Check server, uvloop"
L1_HIT = "ours, L1 hit"
L1_HIT_AUDITED = "ours, L1 hit, audit on"
L1_HIT_UVLOOP = "ours, L1 hit, uvloop"
L2_HIT = "ours, L2 hit (Redis)"
COLD = "ours, cold (introspects)"
LIMIT_H = "H  limit: no-op HTTP authz server"
HTTP_L1_HIT = "ours over HTTP, L1 hit"
HTTP_L1_NEW_PATHS = "ours over HTTP, L1 hit, a new path each request"
LIMIT_B = "B  limit: Envoy, no ext_authz"
ENVOY_OURS = "Envoy + ours (L1 hit)"
ENVOY_OURS_HTTP = "Envoy + ours over HTTP (L1 hit)"
ENVOY_NOOP = "Envoy + no-op ext_authz"
LIMIT_ROWS = {
    "grpc": LIMIT_A,
    "grpc-uvloop": LIMIT_A_UVLOOP,
    "http": LIMIT_H,
    "envoy": LIMIT_B,
    **peer.LIMIT_ROWS,
}
EXPECTED_ROLES = "creator"

CONTENTION_NOTE = (
    "{cpus} CPUs shared by everything: the load generator, Envoy (1 worker thread), the "
    "server under test (1 worker process), Redis and the provider stand-in (a thread of "
    "this process). Absolute figures are for this machine; the ratios are the result."
)


@dataclass(frozen=True, slots=True)
class Settings:
    levels: tuple[int, ...]
    duration_s: float
    warmup_s: float
    wrk_connections: int
    wrk_threads: int
    keep: bool = False
    rounds: int = 1
    peers: bool = True  # the OPA-Envoy rows (built once if need be)


@dataclass(slots=True)
class Outcome:
    results: list[Result]
    # Said under the table: how the pinned rows were pinned, why peer rows are missing.
    remarks: list[str]
    failed: bool = False  # a peer decided differently from ours: its rows are not measured


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path | None, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one level, short runs (CI smoke)")
    parser.add_argument("--duration", type=float, help="seconds measured per row (10; quick 2)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per row (1; quick 0.5)")
    parser.add_argument("--levels", help="concurrent clients of the gRPC rows (2,10,50; quick 10)")
    parser.add_argument("--wrk-connections", type=int, default=10)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--rounds", type=int, help="rounds of the gRPC rows (3; quick 1)")
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the OPA-Envoy rows (default: on, skipped with a message if it cannot be built)",
    )
    parser.add_argument("--chart", type=Path, help="also draw req/s and p99 per row (.svg, .png)")
    args = parser.parse_args(argv)
    levels = args.levels or ("10" if args.quick else "2,10,50")
    settings = Settings(
        levels=tuple(int(level) for level in levels.split(",")),
        duration_s=args.duration or (2.0 if args.quick else 10.0),
        warmup_s=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0),
        wrk_connections=args.wrk_connections,
        wrk_threads=args.wrk_threads,
        keep=args.keep,
        rounds=args.rounds or (1 if args.quick else 3),
        peers=args.peers,
    )
    if min(settings.levels) < 2:
        parser.error("--levels: at least 2 clients (an L2 hit needs two tokens in flight)")
    return settings, args.json, args.chart


def _measure_grpc(
    target: GrpcTarget, settings: Settings, workdir: Path, pinning: Pinning
) -> Result:
    server, pid, bodies = target.server, target.pid, target.bodies
    before = scrape(server.http_port) if server else None
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    with pinning.clients() if target.pinned else contextlib.nullcontext():
        run = h2load.run_clients(
            target.port,
            bodies,
            duration_s=settings.duration_s,
            warmup_s=settings.warmup_s,
            workdir=workdir,
        )
    cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
    result = Result(
        section=target.section,
        row=target.row,
        clients=len(bodies),
        requests=run.requests,
        duration_s=settings.duration_s,
        rps=run.rps,
        p50_ms=percentile(run.latencies_us, 0.50) / 1000,
        p99_ms=percentile(run.latencies_us, 0.99) / 1000,
        errors=run.errors,
        server_cpu=cpu,
    )
    if server is not None and before is not None:
        result.served_by, allowed, denied = served_by(before, scrape(server.http_port))
        # h2load sees HTTP 200 either way: a deny or a refused Check would only show here.
        result.errors += denied
        if allowed < run.requests:
            result.errors += run.requests - allowed
            result.notes.append(f"only {allowed} allowed for {run.requests} requests")
    return result


def _median_round_with_ratio(measured: list[Result], limit: list[Result]) -> Result:
    """The median round of a row, its ratio the median of each round's ratio to its own
    limit round (measured moments apart): steadier than a ratio of two medians."""
    chosen = median_round(measured)
    per_round = [m.rps / lim.rps for m, lim in zip(measured, limit, strict=True) if lim.rps]
    chosen.ratio = statistics.median(per_round) if per_round else None
    return chosen


def _measure_http(
    row: str,
    port: int,
    settings: Settings,
    *,
    pid: int,
    headers: dict[str, str],
    script: Path | None = None,
) -> Result:
    """wrk straight at an HTTP authorization listener, as Envoy's http_service asks it;
    with `script`, the paths it writes."""
    url = f"http://127.0.0.1:{port}/envoy{REQUEST_PATH}"
    status, _ = envoy_variants.get(url, headers)
    if status != 200:
        raise RuntimeError(f"{row}: expected an allow, got {status}")
    _wrk(url, headers, settings, settings.warmup_s, script)
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    run = _wrk(url, headers, settings, settings.duration_s, script)
    cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
    # wrk counts every answer that is not 2xx/3xx as an error: a deny is one.
    return _wrk_result("http", row, run, settings, cpu)


def _wrk(
    url: str,
    headers: dict[str, str],
    settings: Settings,
    duration_s: float,
    script: Path | None = None,
) -> wrk.WrkRun:
    return wrk.run(
        url,
        headers,
        duration_s=duration_s,
        connections=settings.wrk_connections,
        threads=settings.wrk_threads,
        script=script,
    )


def _wrk_result(
    section: str,
    row: str,
    run: wrk.WrkRun,
    settings: Settings,
    cpu: float | None,
    notes: list[str] | None = None,
) -> Result:
    return Result(
        section=section,
        row=row,
        clients=settings.wrk_connections,
        requests=run.requests,
        duration_s=run.duration_s,
        rps=run.rps,
        p50_ms=run.p50_ms,
        p99_ms=run.p99_ms,
        errors=run.errors,
        server_cpu=cpu,
        notes=notes or [],
    )


def _measure_envoy(
    row: str,
    ext_authz_port: int | None,
    settings: Settings,
    workdir: Path,
    *,
    pid: int | None,
    headers: dict[str, str],
    deny_check: bool = False,
    over_http: bool = False,
) -> Result:
    config = envoy_variants.render(ext_authz_port=ext_authz_port, over_http=over_http)
    envoy = envoy_variants.start(config, workdir)
    try:
        url = envoy.url(REQUEST_PATH)
        status, body = envoy_variants.get(url, headers)
        if status != 200 or body != envoy_variants.DIRECT_BODY:
            raise RuntimeError(f"{row}: expected the direct response, got {status} {body!r}")
        notes = []
        if deny_check:
            # Proof that the filter is consulted before the direct response: no token, no 200.
            unauthenticated = {k: v for k, v in headers.items() if k != "authorization"}
            status, _ = envoy_variants.get(url, unauthenticated)
            if status != 401:
                raise RuntimeError(f"{row}: a request without a token got {status}, not 401")
            notes.append("ext_authz consulted (no token: 401)")
        _wrk(url, headers, settings, 1)  # warm-up
        stats_before = envoy_variants.ext_authz_stats(envoy)
        envoy_before = cpu_seconds(envoy.process.pid)
        cpu_before, started = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
        run = _wrk(url, headers, settings, settings.duration_s)
        elapsed = time.monotonic() - started
        cpu = (cpu_seconds(pid) - cpu_before) / elapsed if pid else None
        notes.append(f"Envoy CPU {(cpu_seconds(envoy.process.pid) - envoy_before) / elapsed:.2f}")
        stats_after = envoy_variants.ext_authz_stats(envoy)
    finally:
        envoy.stop()
    result = _wrk_result("envoy", row, run, settings, cpu, notes)
    if ext_authz_port is not None:
        delta = {k: v - stats_before.get(k, 0) for k, v in stats_after.items()}
        bad = sum(v for k, v in delta.items() if k != "ok")
        result.errors += bad
        result.served_by = f"ext_authz ok {delta.get('ok', 0)}" + (f", other {bad}" if bad else "")
        if delta.get("ok", 0) < run.requests:
            result.errors += run.requests - delta.get("ok", 0)
    return result


def run(settings: Settings, workdir: Path, progress: Callable[[str], None]) -> Outcome:
    tokens = [jwt_shaped_token(index) for index in range(max(settings.levels))]
    bodies = [write_body(workdir / f"check-{i}.grpc", token) for i, token in enumerate(tokens)]
    standin = start_standin(tokens)
    redis = RedisServer.start(workdir / "redis")
    noop = NoopProcess.start(workdir / "noop")
    noop_uvloop = NoopProcess.start(workdir / "noop-uvloop", event_loop="uvloop")
    noop_http = NoopProcess.start(workdir / "noop-http", over_http=True)
    servers: list[AuthzProcess] = []
    lineup: peer.PeerLineup | None = None
    try:
        l1 = start_server(standin.issuer, workdir / "l1", ttl_seconds=3600)
        servers.append(l1)
        # The same, writing its audit line for every decision (the default in production).
        audited = start_server(standin.issuer, workdir / "l1-audit", ttl_seconds=3600, audit=True)
        servers.append(audited)
        l1_uvloop = start_server(
            standin.issuer, workdir / "l1-uvloop", ttl_seconds=3600, event_loop="uvloop"
        )
        servers.append(l1_uvloop)
        # An L1 of one entry and a token per client: each Check finds L1 holding another
        # client's token, goes to Redis, and finds its identity there.
        l2_cache = {"redis_url": redis.url, "max_entries": 1}
        l2 = start_server(standin.issuer, workdir / "l2", ttl_seconds=3600, cache=l2_cache)
        servers.append(l2)
        # ttl 0 caches nothing; a token per client means no two Checks share a lookup.
        cold = start_server(standin.issuer, workdir / "cold", ttl_seconds=0)
        servers.append(cold)
        assert_allowed(noop.grpc_port, tokens[0])
        assert_allowed(noop_uvloop.grpc_port, tokens[0])
        for server in servers:
            for token in tokens:  # also puts every token's identity in Redis
                assert_allowed(server.grpc_port, token, EXPECTED_ROLES)
        lineup = peer.start_lineup(
            workdir / "peer", max(settings.levels), peers=settings.peers, progress=progress
        )
        results: list[Result] = []
        for level in settings.levels:
            one_token = [bodies[0]] * level
            grpc_rows = [
                GrpcTarget("grpc", LIMIT_A, noop.grpc_port, one_token, noop.process.pid),
                GrpcTarget("grpc", L1_HIT, l1.grpc_port, one_token, l1.process.pid, l1),
                GrpcTarget(
                    "grpc",
                    L1_HIT_AUDITED,
                    audited.grpc_port,
                    one_token,
                    audited.process.pid,
                    audited,
                ),
                GrpcTarget("grpc", L2_HIT, l2.grpc_port, bodies[:level], l2.process.pid, l2),
                GrpcTarget("grpc", COLD, cold.grpc_port, bodies[:level], cold.process.pid, cold),
                GrpcTarget(
                    "grpc-uvloop",
                    LIMIT_A_UVLOOP,
                    noop_uvloop.grpc_port,
                    one_token,
                    noop_uvloop.process.pid,
                ),
                GrpcTarget(
                    "grpc-uvloop",
                    L1_HIT_UVLOOP,
                    l1_uvloop.grpc_port,
                    one_token,
                    l1_uvloop.process.pid,
                    l1_uvloop,
                ),
                *lineup.rows_for(level),
            ]
            # Rounds interleave the rows, so a burst of load from elsewhere on the shared
            # machine hits every row alike; each row keeps its median round.
            rounds: dict[str, list[Result]] = {target.row: [] for target in grpc_rows}
            for round_index in range(settings.rounds):
                for index, target in enumerate(grpc_rows):
                    progress(f"gRPC  {target.row}, {level} clients, round {round_index + 1}")
                    row_dir = workdir / "h2load" / f"{level}-{round_index}-{index}"
                    rounds[target.row].append(
                        _measure_grpc(target, settings, row_dir, lineup.pinning)
                    )
            sections = {target.row: target.section for target in grpc_rows}
            limits = {section: rounds[LIMIT_ROWS[section]] for section in set(sections.values())}
            results += [
                _median_round_with_ratio(measured, limits[sections[row]])
                for row, measured in rounds.items()
            ]
        headers = {**CLIENT_HEADERS, "authorization": f"Bearer {tokens[0]}"}
        headers.pop("accept-encoding")  # Envoy's direct response is not compressed anyway
        # Every request of a round to a path of its own: the memo of repeated requests
        # never answers, so this is the L1 hit decided each time.
        new_paths = wrk.numbered_paths_script(workdir / "new-paths.lua", f"/envoy{REQUEST_PATH}/")
        http_rows: list[tuple[str, int, int, Path | None]] = [
            (LIMIT_H, noop_http.grpc_port, noop_http.process.pid, None),
            (HTTP_L1_HIT, l1.http_authz_port, l1.process.pid, None),
            (HTTP_L1_NEW_PATHS, l1.http_authz_port, l1.process.pid, new_paths),
        ]
        http_rounds: dict[str, list[Result]] = {row: [] for row, *_ in http_rows}
        for round_index in range(settings.rounds):
            for row, port, pid, script in http_rows:
                progress(f"HTTP  {row}, round {round_index + 1}")
                http_rounds[row].append(
                    _measure_http(row, port, settings, pid=pid, headers=headers, script=script)
                )
        limit_rounds = http_rounds[LIMIT_H]
        results += [_median_round_with_ratio(m, limit_rounds) for m in http_rounds.values()]
        envoy_rows: list[tuple[str, int | None, int | None, bool]] = [
            (LIMIT_B, None, None, False),
            (ENVOY_OURS, l1.grpc_port, l1.process.pid, False),
            (ENVOY_OURS_HTTP, l1.http_authz_port, l1.process.pid, True),
            (ENVOY_NOOP, noop.grpc_port, noop.process.pid, False),
        ]
        for index, (row, authz_port, authz_pid, over_http) in enumerate(envoy_rows):
            progress(f"Envoy {row}, {settings.wrk_connections} connections")
            results.append(
                _measure_envoy(
                    row,
                    authz_port,
                    settings,
                    workdir / f"envoy-{index}",
                    pid=authz_pid,
                    headers=headers,
                    deny_check=row in (ENVOY_OURS, ENVOY_OURS_HTTP),
                    over_http=over_http,
                )
            )
        for server in [*servers, *lineup.servers]:
            if errors := error_lines(server.log_lines()):
                raise RuntimeError(f"server logged errors:\n{errors[:5]}")
    finally:
        if lineup is not None:
            lineup.stop()
        for server in servers:
            server.stop()
        noop.stop()
        noop_uvloop.stop()
        noop_http.stop()
        redis.stop()
    set_ratios(results, LIMIT_ROWS)
    remarks = [f"Pinned rows (J, ours jwt, OPA-Envoy): {lineup.pinning.describe()}."]
    if lineup.opa:
        remarks.append("OPA-Envoy: GOMAXPROCS=1 (as our server.workers: 1), decision logs off.")
    remarks += [message for message in (lineup.skipped, lineup.failed) if message]
    return Outcome(results, remarks, failed=lineup.failed is not None)


def report(results: list[Result], settings: Settings, remarks: Sequence[str] = ()) -> str:
    lines = [
        CONTENTION_NOTE.format(cpus=os.cpu_count()),
        f"Each row: {settings.duration_s:g} s measured after {settings.warmup_s:g} s warm-up "
        f"(wrk: 1 s); gRPC rows are N h2load clients of one stream each, HTTP and end-to-end "
        f"rows wrk -t{settings.wrk_threads} -c{settings.wrk_connections}.",
        "x limit: req/s over the limit of the section at the same clients (A, A', J, "
        "OPA-Envoy allow-all, H or B; "
        f"gRPC and HTTP rows: the median of {settings.rounds} per-round ratios, each row "
        "showing its median round). srv CPU: cores used by the Check server (ours, the "
        "no-op or the plugin) during the row.",
        "",
        format_table(results),
    ]
    envoy = {r.row: r for r in results if r.section == "envoy"}
    if ENVOY_OURS in envoy and ENVOY_OURS_HTTP in envoy and envoy[ENVOY_OURS].rps:
        over_http = envoy[ENVOY_OURS_HTTP].rps / envoy[ENVOY_OURS].rps
        lines.append(f"Envoy + ours over HTTP: {over_http:.2f} x Envoy + ours over gRPC")
    if ENVOY_OURS in envoy and ENVOY_NOOP in envoy and envoy[ENVOY_NOOP].rps:
        ratio = envoy[ENVOY_OURS].rps / envoy[ENVOY_NOOP].rps
        lines.append(f"\nEnvoy + ours over Envoy + no-op ext_authz: {ratio:.2f} of the req/s")
    notes = [f"{r.row} ({r.clients}): {'; '.join(r.notes)}" for r in results if r.notes]
    if notes:
        lines += ["", *notes]
    if remarks:
        lines += ["", *remarks]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path, chart_path = parse_args(argv)

    def progress(message: str) -> None:
        print(f"… {message}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="extauthz-bench-"))
    try:
        outcome = run(settings, workdir, progress)
    finally:
        if settings.keep:
            progress(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = outcome.results
    print(report(results, settings, outcome.remarks))
    if chart_path is not None:
        progress(write_chart(results, chart_path))
    if json_path is not None:
        document = {
            "settings": {
                "levels": settings.levels,
                "duration_s": settings.duration_s,
                "warmup_s": settings.warmup_s,
                "wrk_connections": settings.wrk_connections,
                "wrk_threads": settings.wrk_threads,
                "cpus": os.cpu_count(),
                "peers": settings.peers,
            },
            "remarks": outcome.remarks,
            "results": [result.as_json() for result in results],
        }
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    errors = sum(result.errors for result in results)
    return 1 if errors or outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
