"""Command line: `extauthz-server --config FILE [--check-config]`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from extauthz_server import __version__
from extauthz_server.config import load_config
from extauthz_server.errors import ConfigError
from extauthz_server.logs import configure_logging
from extauthz_server.server import serve
from extauthz_server.workers import WORKER_FLAG, WorkerPool

EXIT_CONFIG_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="extauthz-server", description="Envoy external authorization backed by Keycloak."
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument("--version", action="version", version=__version__)
    # Set by the worker pool on the processes it starts; not for people.
    parser.add_argument(WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"extauthz-server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.check_config:
        print(f"{args.config}: ok ({len(config.policy.routes)} routes)")
        return 0
    configure_logging(config.log_level, config.audit_enabled)
    if config.server.workers > 1 and not args.worker:
        return WorkerPool(args.config, config.server.workers, config.server.grace_period_s).run()
    asyncio.run(serve(config, reuse_port=config.server.workers > 1))
    return 0
