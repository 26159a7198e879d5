"""Command line.

extauthz-server [serve] --config FILE       run the server (SIGTERM/SIGINT stop it)
extauthz-server validate-config FILE        check a configuration; exit 2 naming the key
extauthz-server check --config FILE --path P [--method M] [--host H]
                      [--token T | --claims FILE] [--json]
                                            explain the decision for one request
extauthz-server test-policy --config FILE CASES
                                            run a table of policy cases; exit 1 if one fails
extauthz-server demo [...]                  the local demo (see `demo --help`)
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from extauthz_server import __version__
from extauthz_server.app.explain import Explanation, explain, read_claims
from extauthz_server.app.policy_tests import read_cases, report, run_cases
from extauthz_server.app.server import serve
from extauthz_server.app.workers import WORKER_FLAG, WorkerPool
from extauthz_server.config.model import Config, load_config
from extauthz_server.core.decision import Reason
from extauthz_server.core.identity import Identity
from extauthz_server.core.request import AuthRequest
from extauthz_server.errors import ConfigError
from extauthz_server.ops.logs import configure_logging

EXIT_DENIED = 1
EXIT_CONFIG_ERROR = 2
EXIT_PROVIDER_ERROR = 3
COMMANDS = ("serve", "validate-config", "check", "test-policy", "demo")
_PROVIDER_FAILURES = frozenset({Reason.PROVIDER_UNAVAILABLE, Reason.PROVIDER_REJECTED_CLIENT})


COMMANDS_HELP = """commands:
  serve             run the server (the default: `extauthz-server --config FILE`)
  validate-config   check a configuration file; exit 2 naming the bad key
  check             explain the decision for one request
  test-policy       run a table of policy cases; exit 1 when one fails
  demo              the whole stack on loopback, ready for curl

`extauthz-server COMMAND --help` describes each."""
# Placeholders for `validate-config --no-secrets`: long enough for every length rule.
PLACEHOLDER_SECRET = "placeholder-secret-for-validation-0123456789"  # noqa: S105 - not a secret


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        return _unknown_command(args[0])
    command = args.pop(0) if args and args[0] in COMMANDS else "serve"
    if command == "demo":
        # Imported on demand: the demo brings an identity provider and an Envoy launcher.
        demo = importlib.import_module("extauthz_server.app.demo.run")
        code: int = demo.run_demo(args)
        return code
    try:
        if command == "validate-config":
            return _validate(args)
        if command == "check":
            return _check(args)
        if command == "test-policy":
            return _test_policy(args)
        return _serve(args)
    except ConfigError as exc:
        print(f"extauthz-server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def _unknown_command(name: str) -> int:
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    print(f"extauthz-server: unknown command {name!r}{hint}\n\n{COMMANDS_HELP}", file=sys.stderr)
    return EXIT_CONFIG_ERROR


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="extauthz-server",
        description="Envoy external authorization backed by Keycloak.",
        epilog=COMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument("--version", action="version", version=__version__)
    # Set by the worker pool on the processes it starts; not for people.
    parser.add_argument(WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = load_config(args.config, os.environ)
    if args.check_config:
        return _report_valid(args.config, config)
    configure_logging(config.log_level, config.audit_enabled)
    if config.server.workers > 1 and not args.worker:
        return WorkerPool(args.config, config.server.workers, config.server.grace_period_s).run()
    with asyncio.Runner(loop_factory=_loop_factory(config.server.event_loop)) as runner:
        runner.run(serve(config, config_path=args.config, reuse_port=config.server.workers > 1))
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name != "uvloop":
        return None
    # Checked at configuration load; imported here so that it stays optional.
    uvloop = importlib.import_module("uvloop")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _report_valid(path: Path, config: Config) -> int:
    print(f"{path}: ok ({len(config.policy.routes)} routes)")
    return 0


def _validate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="extauthz-server validate-config")
    parser.add_argument("config", type=Path)
    parser.add_argument(
        "--no-secrets",
        action="store_true",
        help="check the structure without the real secrets: every ${VARIABLE} that is not set "
        "stands for a placeholder (for CI, where the secrets are not at hand)",
    )
    args = parser.parse_args(argv)
    environ: Mapping[str, str] = os.environ
    if args.no_secrets:
        environ = _PlaceholderEnviron(os.environ)
    return _report_valid(args.config, load_config(args.config, environ))


class _PlaceholderEnviron(Mapping[str, str]):
    """The environment, with a placeholder for every variable it does not have."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        return self._environ.get(name, PLACEHOLDER_SECRET)

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def _check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="extauthz-server check",
        description="Explain the decision for one request. Exit 0 allowed, 1 denied, "
        "2 configuration error, 3 provider unreachable.",
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--path", required=True, help="request path, query string allowed")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--host", default="")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--token", help="a bearer token, introspected at the provider")
    source.add_argument(
        "--claims", type=Path, help="a JSON introspection answer to use instead of a token"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    config = load_config(args.config, os.environ)
    try:
        claims = read_claims(args.claims) if args.claims is not None else None
    except ConfigError as exc:
        print(f"extauthz-server: input error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    token = args.token if args.token is not None else ("cli-claims" if claims else None)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = AuthRequest(method=args.method, host=args.host, path=args.path, headers=headers)
    explanation = asyncio.run(explain(config, request, claims=claims, now=time.time()))
    _print(explanation, as_json=args.json)
    if explanation.decision.reason in _PROVIDER_FAILURES:
        return EXIT_PROVIDER_ERROR
    return 0 if explanation.decision.allowed else EXIT_DENIED


def _test_policy(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="extauthz-server test-policy",
        description="Run a table of cases through the real decision path, with the identities "
        "the file gives (no provider is called). Exit 0 when every case passes, 1 when one "
        "fails, 2 for an error in the configuration or the cases file.",
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("cases", type=Path, help="YAML file with a list of `cases`")
    args = parser.parse_args(argv)
    config = load_config(args.config, os.environ)
    try:
        cases = read_cases(args.cases)
    except ConfigError as exc:
        print(f"extauthz-server: input error in {args.cases}: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    results = asyncio.run(run_cases(config, cases, now=time.time()))
    print(report(results))
    return 0 if all(result.passed for result in results) else EXIT_DENIED


def _print(explanation: Explanation, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(explanation.as_dict(), indent=2))
        return
    decision, identity = explanation.decision, explanation.identity
    verdict = "allow" if decision.allowed else "deny"
    provider_roles = sorted(identity.provider_roles) if isinstance(identity, Identity) else []
    lines = [
        f"decision:        {verdict} ({decision.status}, {decision.reason.value})",
        f"route:           {decision.route or '(none)'}",
        *(f"captured:        {name} = {value}" for name, value in explanation.params.items()),
        *(
            f"route requires:  {kind.replace('_', ' ')} {', '.join(names)}"
            for kind, names in explanation.required.items()
            if names
        ),
        *(
            [f"condition:       {c['when']}  →  {c['result']}"]
            if (c := explanation.condition) is not None
            else []
        ),
        *(
            [f"keycloak asked:  {k['asked']}  →  {k['answer']}"]
            if (k := explanation.permission) is not None
            else []
        ),
        f"identity:        {json.dumps(explanation.as_dict()['identity'])}",
        f"provider roles:  {', '.join(provider_roles) or '(none)'}",
        f"internal roles:  {', '.join(sorted(explanation.internal_roles)) or '(none)'}",
        *(f"hint:            {hint}" for hint in explanation.hints),
        *(f"set header:      {name}: {value}" for name, value in decision.upstream_headers),
        *(f"removed header:  {name}" for name in decision.headers_to_remove),
        *(f"to the client:   {name}: {value}" for name, value in decision.response_headers),
    ]
    print("\n".join(lines))
