"""Route lookup cost as the number of routes grows: µs per match at 10, 1,000 and 100,000
routes (a match, and the no-match path), and the time to validate and load each route set
from YAML, in one run.

    .venv/bin/python -m bench.routes [--sizes 10,1000,100000] [--lookups 2000] [--rounds 5]

The routes are a mix of exact paths, segment prefixes, templates with captures and routes
for one host with a `**` template, as a many-tenant deployment writes them. "match" asks for
routes spread over the whole set; "same 10" asks for the first 10 routes at every size, which
separates the work a lookup does (flat) from the memory a large set spreads over (a lookup
for a route nobody asked for lately misses the CPU caches). Every request's host and path are
new string objects, as a server's are.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from extauthz_server.config.model import parse_config
from extauthz_server.core.policy import Policy
from tests.support.configs import seed_config_text

ISSUER = "http://127.0.0.1:8080/realms/demo"
HOT_ROUTES = 10


def route_set(count: int) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    for index in range(count):
        kind = index % 4
        name = f"r{index}"
        if kind == 0:
            routes.append({"name": name, "path": f"/svc{index}/status", "any_of": ["creator"]})
        elif kind == 1:
            routes.append({"name": name, "path_prefix": f"/tenants/t{index}/files"})
        elif kind == 2:
            template = f"/api/regions/r{index}/forms/{{id}}"
            routes.append({"name": name, "path_template": template, "any_of": ["creator"]})
        else:
            host = f"t{index}.example.com"
            routes.append({"name": name, "host": host, "path_template": "/app/{rest=**}"})
    return routes


def sample_request(index: int) -> tuple[str, str]:
    """A request that route `index` of `route_set` matches: (host, path)."""
    kind = index % 4
    if kind == 0:
        return "app.example.com", f"/svc{index}/status"
    if kind == 1:
        return "app.example.com", f"/tenants/t{index}/files/report.pdf"
    if kind == 2:
        return "app.example.com", f"/api/regions/r{index}/forms/42"
    return f"t{index}.example.com:443", "/app/inbox/7"


def load(count: int) -> tuple[Policy, float]:
    text = seed_config_text(ISSUER, routes=route_set(count))
    started = time.perf_counter()
    config = parse_config(text, {})
    return config.policy, time.perf_counter() - started


def fresh(request: tuple[str, str]) -> tuple[str, str]:
    """The same text in new objects: a string's hash is kept once computed."""
    host, path = request
    return "".join(list(host)), "".join(list(path))


def per_match_us(policy: Policy, requests: list[tuple[str, str]], expect_match: bool) -> float:
    started = time.perf_counter_ns()
    for host, path in requests:
        found = policy.match(host, path, "GET")
        if (found is not None) != expect_match:
            raise AssertionError(f"{host}{path}: expected match={expect_match}")
    return (time.perf_counter_ns() - started) / len(requests) / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,1000,100000")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    chooser = random.Random(7)  # noqa: S311 - a fixed sample, not a secret
    loaded: dict[int, tuple[Policy, float]] = {size: load(size) for size in sizes}
    hits: dict[int, list[float]] = {size: [] for size in sizes}
    hot_hits: dict[int, list[float]] = {size: [] for size in sizes}
    misses: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(args.rounds):
        # Sizes interleaved round by round, so the machine's noise hits all of them alike.
        for size in sizes:
            policy = loaded[size][0]
            found = [fresh(sample_request(chooser.randrange(size))) for _ in range(args.lookups)]
            targets = min(size, HOT_ROUTES)
            same = [fresh(sample_request(chooser.randrange(targets))) for _ in range(args.lookups)]
            missing = [("app.example.com", f"/nothing/{i}/here") for i in range(args.lookups)]
            hits[size].append(per_match_us(policy, found, expect_match=True))
            hot_hits[size].append(per_match_us(policy, same, expect_match=True))
            misses[size].append(per_match_us(policy, missing, expect_match=False))
    base_hit, base_miss = statistics.median(hits[sizes[0]]), statistics.median(misses[sizes[0]])
    base_hot = statistics.median(hot_hits[sizes[0]])
    print(
        f"{'routes':>8} {'load s':>8} {'match µs':>9} {'x':>5} {'same 10 µs':>11} {'x':>5}"
        f" {'no match µs':>12} {'x':>5}"
    )
    for size in sizes:
        hit, miss = statistics.median(hits[size]), statistics.median(misses[size])
        same_10 = statistics.median(hot_hits[size])
        print(
            f"{size:>8} {loaded[size][1]:>8.2f} {hit:>9.2f} {hit / base_hit:>5.2f}"
            f" {same_10:>11.2f} {same_10 / base_hot:>5.2f} {miss:>12.2f} {miss / base_miss:>5.2f}"
        )
    print(f"medians of {args.rounds} rounds of {args.lookups} lookups; x: over {sizes[0]} routes")


if __name__ == "__main__":
    main()
