"""docker-compose.http.yml: the demo stack with Envoy asking us over HTTP. Checked with
`docker-compose config` and read as merged: our HTTP authorization listener opens on the port
envoy/envoy-http.yaml calls, on the compose network only, and Envoy runs that file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz_server.config.model import parse_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.http.yml")
EXAMPLE_CONFIG = ROOT / "examples" / "config.yaml"
ENVOY_HTTP = ROOT / "envoy" / "envoy-http.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail("docker-compose is not installed (Debian: apt-get install docker-compose)")
    files = [argument for path in COMPOSE_FILES for argument in ("--file", str(path))]
    done = subprocess.run(
        [executable, *files, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    merged: dict[str, Any] = yaml.safe_load(done.stdout)["services"]
    return merged


def extauthz_cluster_port() -> tuple[str, int]:
    envoy = yaml.safe_load(ENVOY_HTTP.read_text(encoding="utf-8"))
    (cluster,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "extauthz"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    return address["address"], int(address["port_value"])


def test_the_server_listens_for_http_checks_where_envoy_http_yaml_calls(
    services: dict[str, Any],
) -> None:
    environ = {name: str(value) for name, value in services["extauthz"]["environment"].items()}
    config = parse_config(
        EXAMPLE_CONFIG.read_text(encoding="utf-8"), environ, EXAMPLE_CONFIG.parent
    )
    host, port = extauthz_cluster_port()

    assert config.server.http_authz_listen == f"0.0.0.0:{port}"
    assert host == "extauthz"
    # The gRPC listener stays as it was, for the gRPC stack.
    assert config.server.grpc_listen == "0.0.0.0:9191"


def test_the_http_listener_is_not_published(services: dict[str, Any]) -> None:
    published = [str(p) for p in services["extauthz"].get("ports", [])]
    assert not any("9192" in port for port in published)


def test_envoy_runs_envoy_http_yaml(services: dict[str, Any]) -> None:
    envoy = services["envoy"]
    assert envoy["command"] == ["envoy", "-c", "/etc/envoy/envoy-http.yaml"]
    # docker-compose prints each volume as host:container[:mode].
    mounts = {tuple(str(volume).split(":")[:2]) for volume in envoy["volumes"]}
    assert (str(ENVOY_HTTP), "/etc/envoy/envoy-http.yaml") in mounts, mounts
