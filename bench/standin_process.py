"""The Keycloak stand-in in a process of its own, answering every token as an active manager,
for the sequential benchmarks (`bench.cold_path`, `bench.introspection_client`): its work
stays out of the process that measures.

A benchmark's `main` calls `sequential_args()` first; the stand-in is the same module run
again with a hidden `--serve-standin`, which makes that call serve until killed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from bench.check_bodies import introspection_document
from bench.stack import spawn_with_port_file, stop_process
from tests.support.keycloak_standin import KeycloakStandIn


class _EveryTokenActive(dict[str, dict[str, object]]):
    """The stand-in's token table, answering every token as an active manager."""

    def get(self, key: str, default: object = None) -> dict[str, object]:
        return introspection_document()


def sequential_args() -> argparse.Namespace:
    """`--calls` and `--rounds`; in the stand-in's own process, it serves and never returns."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-standin", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_standin is not None:
        _serve(args.serve_standin)
    return args


@contextlib.contextmanager
def standin_process(module: str, workdir: Path) -> Iterator[str]:
    """`python -m <module> --serve-standin` for as long as the block runs; yields its issuer."""
    port_file = workdir / "standin.port"
    argv = ["-m", module, "--serve-standin", str(port_file)]
    standin, port = spawn_with_port_file(argv, port_file, "the stand-in")
    try:
        yield f"http://127.0.0.1:{port}/realms/demo"
    finally:
        stop_process(standin)


def _serve(port_file: Path) -> NoReturn:
    loop = asyncio.new_event_loop()
    standin = KeycloakStandIn(documents=_EveryTokenActive())
    loop.run_until_complete(standin.start())
    port_file.write_text(str(standin.port))
    loop.run_forever()
    raise SystemExit(0)  # run_forever returns only if the loop is stopped
