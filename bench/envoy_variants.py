"""The Envoys of the end-to-end rows, from envoy/envoy.yaml (or envoy-http.yaml, asking over
HTTP) rendered for loopback: every route answers with the same direct_response, with or
without the ext_authz filter.

ext_authz is an HTTP filter ahead of the router, and the router is what sends a
direct_response, so a request to such a route is still checked (the run verifies it with a
request without a token, which must get our 401). The access log is removed in every
variant: it is the same work in all of them and only adds noise.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.envoy import (
    ENVOY_HTTP_YAML,
    ENVOY_YAML,
    EXT_AUTHZ_FILTER,
    EnvoyProcess,
    find_envoy,
    render_loopback_config,
    write_config,
)

DIRECT_BODY = "ok\n"
_READY_TIMEOUT_S = 20.0
_UNUSED_PORT = 9  # the `app` cluster is never reached: every route is a direct_response


def render(*, ext_authz_port: int | None, over_http: bool = False) -> dict[str, Any]:
    """`ext_authz_port=None` is Limit B: the same Envoy without the ext_authz filter.
    `over_http`: the filter asks over HTTP (envoy/envoy-http.yaml) instead of gRPC."""
    config = render_loopback_config(
        ext_authz_port=ext_authz_port or _UNUSED_PORT,
        upstream_port=_UNUSED_PORT,
        source=ENVOY_HTTP_YAML if over_http else ENVOY_YAML,
    )
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed = manager["typed_config"]
    typed.pop("access_log", None)
    typed["route_config"]["virtual_hosts"][0]["routes"] = [
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": DIRECT_BODY}},
        }
    ]
    if ext_authz_port is None:
        typed["http_filters"] = [f for f in typed["http_filters"] if f["name"] != EXT_AUTHZ_FILTER]
    return config


def start(config: dict[str, Any], workdir: Path) -> EnvoyProcess:
    """Envoy with one worker thread (as in the end-to-end tests), ready to serve."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_config(config, workdir / "envoy.json")
    admin_address_path = workdir / "admin_address"
    log_path = workdir / "envoy.log"
    argv = [
        str(find_envoy()),
        "-c", str(config_path),
        "--disable-hot-restart",
        "--concurrency", "1",
        "-l", "warning",
        "--admin-address-path", str(admin_address_path),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    envoy = EnvoyProcess(process=process, config_path=config_path, log_path=log_path)
    try:
        _wait_until_ready(envoy, admin_address_path)
    except BaseException:
        envoy.stop()
        raise
    return envoy


def _wait_until_ready(envoy: EnvoyProcess, admin_address_path: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if envoy.process.poll() is not None:
            raise RuntimeError(f"envoy exited during startup\n{envoy.log_tail()}")
        if envoy.admin_port == 0 and admin_address_path.is_file():
            address = admin_address_path.read_text().strip()
            if address:
                envoy.admin_port = int(address.rsplit(":", 1)[1])
        if envoy.admin_port and get(envoy.admin_url("/ready"))[0] == 200:
            listeners = json.loads(get(envoy.admin_url("/listeners?format=json"))[1])
            address = listeners["listener_statuses"][0]["local_address"]["socket_address"]
            envoy.listen_port = int(address["port_value"])
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            envoy.process.wait(timeout=0.05)
    raise TimeoutError(f"envoy not ready after {_READY_TIMEOUT_S:.0f}s\n{envoy.log_tail()}")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback URL
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, repr(exc)


def ext_authz_stats(envoy: EnvoyProcess) -> dict[str, int]:
    """Envoy's ext_authz counters (`ok`, `denied`, `error`, ...) of the listener."""
    _, text = get(envoy.admin_url("/stats?filter=ext_authz"))
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if ".ext_authz." in name and value.strip().isdigit():
            stats[name.rsplit(".", 1)[1]] = int(value)
    return stats
