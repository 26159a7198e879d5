"""Run the real Traefik (built from its Go module, see traefik_binary) on
deploy/traefik/dynamic.yml for end-to-end tests.

Only the two addresses in the file are rewritten: extauthz-server's HTTP authorization
listener and the app. A static configuration written beside it binds the entry point to
loopback, loads the file through the file provider, and turns off the version check and usage
reports; the API listens on a second loopback port so that readiness can be read from it.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import traefik_binary
from tests.support.net import free_port
from tests.support.proxy_process import (
    LOOPBACK,
    ProxyProcess,
    log_tail,
    rewrite_addresses,
    start_proxy,
)

DYNAMIC_YML = Path(__file__).resolve().parents[2] / "deploy" / "traefik" / "dynamic.yml"
_ROUTER = "app@file"
_CONFIGURED_TIMEOUT_S = 20.0
_LOGS = ("traefik.log", "access.log", "output.log")
_STATIC = """\
global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  web:
    address: "{loopback}:{listen_port}"
  traefik:
    address: "{loopback}:{api_port}"
api:
  insecure: true
  dashboard: false
providers:
  file:
    filename: "{workdir}/dynamic.yml"
    watch: false
log:
  level: DEBUG
  filePath: "{workdir}/traefik.log"
accessLog:
  filePath: "{workdir}/access.log"
"""


def find_traefik() -> Path:
    """The cached binary, built now when it is missing; skips the test when there is no Go
    to build it with, and fails it when the build fails."""
    found = _built_or_why_not()
    if isinstance(found, Path):
        return found
    if traefik_binary.go_tool() is None:
        pytest.skip(found)
    pytest.fail(found, pytrace=False)


@functools.cache
def _built_or_why_not() -> Path | str:
    # Once per test session: a failed build is not tried again by every Traefik test.
    found = traefik_binary.cached_binary()
    if found is not None:
        return found
    go = traefik_binary.go_tool()
    if go is None:
        return (
            f"Traefik {traefik_binary.VERSION} is not built in {traefik_binary.CACHE_ROOT} and "
            "there is no Go toolchain to build it (install Go >= 1.25, then "
            "`python3 -m tests.support.traefik_binary`)"
        )
    try:
        return traefik_binary.build(go)
    except traefik_binary.TraefikBuildFailed as exc:
        return f"Traefik {traefik_binary.VERSION} could not be built: {exc}"


def render(*, extauthz_port: int, upstream_port: int) -> str:
    return rewrite_addresses(
        DYNAMIC_YML,
        (
            (
                'address: "http://127.0.0.1:9192/forward-auth"',
                f'address: "http://{LOOPBACK}:{extauthz_port}/forward-auth"',
            ),
            ('url: "http://127.0.0.1:8000"', f'url: "http://{LOOPBACK}:{upstream_port}"'),
        ),
    )


def start_traefik(*, extauthz_port: int, upstream_port: int, workdir: Path) -> ProxyProcess:
    """Start Traefik on a free loopback port; return once its router from the shipped file
    is enabled."""
    binary = find_traefik()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "dynamic.yml").write_text(
        render(extauthz_port=extauthz_port, upstream_port=upstream_port), encoding="utf-8"
    )
    api_ports: list[int] = []

    def launch(listen_port: int) -> subprocess.Popen[bytes]:
        api_ports.append(free_port())
        static = _STATIC.format(
            loopback=LOOPBACK, listen_port=listen_port, api_port=api_ports[-1], workdir=workdir
        )
        (workdir / "traefik.yml").write_text(static, encoding="utf-8")
        argv = [str(binary), f"--configFile={workdir / 'traefik.yml'}"]
        with (workdir / "output.log").open("wb") as output:
            return subprocess.Popen(argv, cwd=workdir, stdout=output, stderr=subprocess.STDOUT)

    started = start_proxy("traefik", launch, workdir, _LOGS)
    try:
        _wait_until_configured(api_ports[-1], started)
    except BaseException:
        started.stop()
        raise
    return started


def _wait_until_configured(api_port: int, started: ProxyProcess) -> None:
    """Traefik's entry point accepts connections before the file provider's configuration is
    applied, and answers 404 until then: wait until the API reports the router enabled."""
    url = f"http://{LOOPBACK}:{api_port}/api/http/routers/{_ROUTER}"
    deadline = time.monotonic() + _CONFIGURED_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            last = f"traefik exited with {started.process.returncode}"
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status = json.loads(response.read()).get("status")
                if status == "enabled":
                    return
                last = f"router {_ROUTER} is {status!r}"
        except urllib.error.HTTPError as exc:
            last = f"API answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(
        f"traefik did not enable {_ROUTER} ({last}):\n{log_tail(started.workdir, _LOGS)}"
    )
