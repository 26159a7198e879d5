"""`run_demo(argv)`: the whole stack on loopback, ready for curl, until Ctrl-C or SIGTERM.

identity provider (dev IdP, or Keycloak with --keycloak)
    ▲ introspection
extauthz-server (in this process)  ◀── Check ──  Envoy (child process)  ──▶  echo upstream
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import aiohttp
import yaml

from extauthz_server.app.demo import idp
from extauthz_server.app.demo.echo import EchoUpstream
from extauthz_server.app.demo.envoy import EnvoyNotFound, EnvoyProcess, find_envoy, render_config
from extauthz_server.app.server import Server
from extauthz_server.config.model import parse_config

# Not 8080: that is where examples/config.yaml expects Keycloak (demo --keycloak-port 8080).
DEFAULT_ENVOY_PORT = 10000
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_MISSING_PREREQUISITE = 2
SERVER_READY_TIMEOUT_S = 30.0

# The example configuration's roles and routes (examples/config.yaml).
ROLE_MAPPING = {
    "admin": ["admin"],
    "manager": ["creator"],
    "org manager": ["platformAdmin"],
    "Manager for {region}": ["manager:{region|lower}"],
}
ROUTES: list[dict[str, object]] = [
    {"name": "health", "path_prefix": "/healthz", "public": True},
    {
        "name": "admin",
        "path_prefix": "/admin",
        "methods": ["GET", "POST", "PUT", "DELETE"],
        "any_of": ["admin", "platformAdmin"],
    },
    {"name": "forms", "path_prefix": "/api/forms", "any_of": ["creator", "admin"]},
    {
        "name": "region-forms",
        "path_template": "/api/regions/{region}/forms/{rest=**}",
        "any_of": ["manager:{region|lower}", "admin"],
    },
    {"name": "default", "path_prefix": "/", "any_of": []},
]
# What each demo user gets through Envoy: (path, expected status, note).
_EXPECTED: Mapping[str, tuple[tuple[str, int, str], ...]] = {
    "alice": (("/api/forms", 200, "x-auth-roles: admin"), ("/admin", 200, "admin")),
    "bob": (("/api/forms", 200, "x-auth-roles: creator"), ("/admin", 403, "not an admin")),
    "carol": (("/admin", 200, "x-auth-roles: platformAdmin"), ("/api/forms", 403, "")),
    "dave": (("/whoami", 200, "any signed-in user, no roles"), ("/api/forms", 403, "")),
    "maria": (
        ("/api/regions/europe/forms/1", 200, "x-auth-roles: manager:europe"),
        ("/api/regions/asia/forms/1", 403, "Manager for Europe only"),
    ),
}

log = logging.getLogger(__name__)


class IdentityProvider(Protocol):
    @property
    def issuer(self) -> str: ...

    @property
    def token_endpoint(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def run_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="extauthz-server demo",
        description="Run a dev identity provider, extauthz-server, an echo app and Envoy on "
        "loopback, and print curl commands to try them.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_ENVOY_PORT,
        help=f"Envoy's listener port (default {DEFAULT_ENVOY_PORT}; 0: any free port)",
    )
    parser.add_argument(
        "--keycloak",
        action="store_true",
        help="use a real Keycloak 26.7.3 (needs Java 17 and Maven) instead of the dev IdP",
    )
    parser.add_argument(
        "--keycloak-port",
        type=int,
        default=0,
        help="with --keycloak: Keycloak's port (default any free one; 8080 is where "
        "examples/config.yaml expects it)",
    )
    parser.add_argument(
        "--opaque-tokens",
        action="store_true",
        help="the dev IdP hands out opaque access tokens instead of JWTs",
    )
    parser.add_argument(
        "--ports-file", type=Path, help="write the chosen ports and URLs here as JSON once ready"
    )
    parser.add_argument("--verbose", action="store_true", help="show the server's log lines")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        find_envoy()
    except EnvoyNotFound as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_MISSING_PREREQUISITE
    for port, option in ((args.port, "--port"), (args.keycloak_port, "--keycloak-port")):
        if port and not _port_is_free(port):
            print(
                f"demo: port {port} is busy (something listens there already); choose another "
                f"with {option} N, or {option} 0 for any free port",
                file=sys.stderr,
            )
            return EXIT_MISSING_PREREQUISITE
    provider: IdentityProvider
    if args.keycloak:
        from extauthz_server.app.demo.keycloak import KeycloakUnavailable, LocalKeycloak

        try:
            provider = LocalKeycloak.prepare(os.environ, args.keycloak_port)
        except KeycloakUnavailable as exc:
            print(f"demo: --keycloak: {exc}", file=sys.stderr)
            return EXIT_MISSING_PREREQUISITE
    else:
        provider = idp.DevIdentityProvider(opaque=args.opaque_tokens)
    return asyncio.run(_run(provider, args.port, args.ports_file))


async def _run(provider: IdentityProvider, envoy_port: int, ports_file: Path | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    upstream = EchoUpstream()
    server: Server | None = None
    envoy: EnvoyProcess | None = None
    with tempfile.TemporaryDirectory(prefix="extauthz-demo-") as workdir:
        async with aiohttp.ClientSession() as session:
            try:
                print("starting the identity provider…", flush=True)
                await provider.start()
                await upstream.start()
                config_text = _server_config(provider.issuer)
                config_path = Path(workdir) / "extauthz.yaml"
                await asyncio.to_thread(config_path.write_text, config_text, "utf-8")
                server = Server(parse_config(config_text, os.environ))
                await server.start()
                await _wait_until_ready(server)
                envoy = EnvoyProcess(
                    render_config(
                        ext_authz_port=server.grpc_port,
                        upstream_port=upstream.port,
                        listen_port=envoy_port,
                    ),
                    Path(workdir),
                )
                await envoy.start(session)
                ports = {
                    "envoy": envoy.listen_port,
                    "grpc": server.grpc_port,
                    "http": server.http_port,
                    "upstream": upstream.port,
                    "issuer": provider.issuer,
                    "token_endpoint": provider.token_endpoint,
                }
                if ports_file is not None:
                    await asyncio.to_thread(_write_atomically, ports_file, json.dumps(ports))
                print(
                    _instructions(envoy.listen_port, server.http_port, provider, config_path),
                    flush=True,
                )
                await stop.wait()
                print("\nstopping…", flush=True)
                return EXIT_OK
            except (OSError, RuntimeError, TimeoutError) as exc:
                print(f"demo: could not start: {exc}", file=sys.stderr)
                return EXIT_FAILED
            finally:
                if envoy is not None:
                    await envoy.stop()
                if server is not None:
                    await server.stop()
                await upstream.stop()
                await provider.stop()
                if ports_file is not None:
                    await asyncio.to_thread(ports_file.unlink, missing_ok=True)


def _port_is_free(port: int) -> bool:
    """Whether Envoy's listener port can be bound on loopback, checked before anything
    starts so that a busy port is named at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _server_config(issuer: str) -> str:
    document = {
        "server": {
            "grpc_listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "grace_period_s": 1,
        },
        "provider": {
            "issuer": issuer,
            "client_id": idp.INTROSPECTING_CLIENT_ID,
            "client_secret": idp.INTROSPECTING_CLIENT_SECRET,
            "timeout_ms": 150,
        },
        "roles": {"mapping": ROLE_MAPPING},
        "cache": {"ttl_seconds": 30},
        "routes": ROUTES,
    }
    return yaml.safe_dump(document, sort_keys=False)


async def _wait_until_ready(server: Server) -> None:
    """Ready once the provider's discovery document has been read (as /readyz says)."""
    async with asyncio.timeout(SERVER_READY_TIMEOUT_S):
        while not server.is_ready():  # noqa: ASYNC110 - Server offers no readiness event
            await asyncio.sleep(0.05)


def _write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


def _instructions(
    envoy_port: int, http_port: int, provider: IdentityProvider, config_path: Path
) -> str:
    base = f"http://127.0.0.1:{envoy_port}"
    extract = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
    lines = [
        "",
        f"Ready. Envoy: {base}   identity provider: {provider.issuer}",
        f"extauthz-server: /readyz on http://127.0.0.1:{http_port}/readyz",
        f"its configuration: {config_path} (removed when the demo stops)",
        "",
        f"Get a token (users {', '.join(idp.USERS)}; password <name>-pw):",
        "",
    ]
    for user in idp.USERS.values():
        variable = f"{user.username.upper()}_TOKEN"
        lines.append(
            f"  {variable}=$(curl -s -d grant_type=password -d client_id={idp.PUBLIC_CLIENT_ID}"
            f" -d username={user.username} -d password={user.password}"
            f" {provider.token_endpoint} | {extract})"
        )
    lines += ["", "Then call the app through Envoy:", ""]
    for username, calls in _EXPECTED.items():
        variable = f"{username.upper()}_TOKEN"
        for path, status, note in calls:
            comment = f"# {status}" + (f", {note}" if note else "")
            lines.append(
                f'  curl -i -H "Authorization: Bearer ${variable}" {base}{path}   {comment}'
            )
    lines += [
        f"  curl -i {base}/api/forms   # 401, no token",
        f'  curl -i -H "Authorization: Bearer not-a-real-token" {base}/api/forms   # 401',
        f"  curl -i {base}/healthz     # 200, public route",
        "",
        "The echo app's answer shows the x-auth-* headers extauthz-server added.",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)
