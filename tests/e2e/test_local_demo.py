"""`run_demo` as a user runs it: its own process, the printed curl flow, then SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from extauthz_server.app.demo import idp
from extauthz_server.app.demo.envoy import connection_manager, ext_authz_filter, render_config
from tests.support.authz_process import AuthzProcess
from tests.support.configs import DEMO_CLIENT_SECRET
from tests.support.envoy import (
    EXT_AUTHZ_FILTER,
    load_deployment_config,
    validate_config,
    write_config,
)
from tests.support.keycloak import Keycloak
from tests.support.net import free_port

START_TIMEOUT_S = 60.0
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
STOP_TIMEOUT_S = 15.0
_LAUNCH = (
    "import sys; from extauthz_server.app.demo.run import run_demo;"
    " sys.exit(run_demo(sys.argv[1:]))"
)


class Demo:
    def __init__(self, process: subprocess.Popen[bytes], output: Path, ports: dict[str, Any]):
        self.process = process
        self.output = output
        self.ports = ports

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['envoy']}{path}"

    def printed(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")


def _start_demo(workdir: Path, *extra: str, timeout_s: float = START_TIMEOUT_S) -> Demo:
    workdir.mkdir(parents=True, exist_ok=True)
    ports_file = workdir / "ports.json"
    output = workdir / "demo.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, "--port", "0", "--ports-file", str(ports_file), *extra],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout_s
    while not ports_file.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"demo did not start (exit {process.returncode}):\n{output.read_text()}")
        time.sleep(0.05)
    return Demo(process, output, json.loads(ports_file.read_text(encoding="utf-8")))


def _stop(demo: Demo) -> int:
    if demo.process.poll() is None:
        demo.process.send_signal(signal.SIGTERM)
        try:
            demo.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            demo.process.kill()
            demo.process.wait()
            pytest.fail(f"demo ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s:\n{demo.printed()}")
    return demo.process.returncode


def _http(
    method: str,
    url: str,
    *,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _password_grant(demo: Demo, username: str) -> str:
    form = {
        "grant_type": "password",
        "client_id": "web-app",
        "username": username,
        "password": f"{username}-pw",
    }
    status, _, body = _http("POST", demo.ports["token_endpoint"], form=form)
    assert status == 200, body
    token = json.loads(body)["access_token"]
    assert isinstance(token, str)
    return token


@pytest.fixture(params=["jwt", "opaque"])
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Demo]:
    extra = ("--opaque-tokens",) if request.param == "opaque" else ()
    started = _start_demo(tmp_path, *extra)
    yield started
    _stop(started)


@pytest.mark.envoy
def test_printed_flow_gives_200_with_roles_403_and_401(demo: Demo) -> None:
    printed = demo.printed()
    assert f"curl -i {demo.url('/api/forms')}   # 401" in printed
    assert f"password=bob-pw {demo.ports['token_endpoint']}" in printed
    bob = _password_grant(demo, "bob")
    bearer = {"Authorization": f"Bearer {bob}"}

    status, _, body = _http("GET", demo.url("/api/forms"), headers=bearer)
    assert status == 200, body
    echoed = json.loads(body)["headers"]
    assert echoed["x-auth-roles"] == "creator"
    assert echoed["x-auth-username"] == "bob"

    status, _, body = _http("GET", demo.url("/admin"), headers=bearer)
    assert status == 403, body

    status, headers, body = _http("GET", demo.url("/api/forms"))
    assert status == 401, body
    assert headers["www-authenticate"].startswith('Bearer realm="demo"')

    carol = _password_grant(demo, "carol")
    status, _, body = _http("GET", demo.url("/admin"), headers={"Authorization": f"Bearer {carol}"})
    assert status == 200, body
    assert json.loads(body)["headers"]["x-auth-roles"] == "platformAdmin"

    # The seed's example: a role scoped to a region.
    assert f"{demo.url('/api/regions/asia/forms/1')}   # 403, Manager for Europe only" in printed
    maria = {"Authorization": f"Bearer {_password_grant(demo, 'maria')}"}
    status, _, body = _http("GET", demo.url("/api/regions/europe/forms/1"), headers=maria)
    assert status == 200, body
    assert json.loads(body)["headers"]["x-auth-roles"] == "manager:europe"
    status, _, body = _http("GET", demo.url("/api/regions/asia/forms/1"), headers=maria)
    assert status == 403, body


@pytest.mark.envoy
def test_sigterm_stops_everything_quickly_with_exit_0(tmp_path: Path) -> None:
    demo = _start_demo(tmp_path)
    stopped = time.monotonic()

    assert _stop(demo) == 0
    assert time.monotonic() - stopped < 10
    assert not (tmp_path / "ports.json").exists()
    assert "stopping" in demo.printed()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(demo.url("/healthz"), timeout=2)  # noqa: S310 - loopback


@pytest.mark.keycloak
@pytest.mark.envoy
def test_the_fresh_machine_walk_reaches_ready_and_a_200_through_envoy(
    keycloak: Keycloak, tmp_path: Path
) -> None:
    # README "On a fresh machine", on free ports instead of 8080, 9191, 8181, 8282 and 10000.
    # (`keycloak` is only asked for so that the distribution is in the cache.)
    keycloak_port = free_port()
    demo = _start_demo(
        tmp_path / "demo", "--keycloak", "--keycloak-port", str(keycloak_port), timeout_s=300
    )
    server: AuthzProcess | None = None
    (tmp_path / "server").mkdir()
    try:
        issuer = f"http://127.0.0.1:{keycloak_port}/realms/demo"
        assert demo.ports["issuer"] == issuer
        assert "its configuration: " in demo.printed()
        server = AuthzProcess.start(
            EXAMPLE_CONFIG.read_text(encoding="utf-8"),
            tmp_path / "server",
            env={
                "EXTAUTHZ_CLIENT_SECRET": DEMO_CLIENT_SECRET,
                "EXTAUTHZ__PROVIDER__ISSUER": issuer,
                "EXTAUTHZ__SERVER__GRPC_LISTEN": "127.0.0.1:0",
                "EXTAUTHZ__SERVER__HTTP_LISTEN": "127.0.0.1:0",
                "EXTAUTHZ__SERVER__LOGOUT_LISTEN": "127.0.0.1:0",
            },
        )
        ready = _poll_status(f"http://127.0.0.1:{server.http_port}/readyz", 200, 60)
        maria = {"Authorization": f"Bearer {_password_grant(demo, 'maria')}"}
        status, _, body = _http("GET", demo.url("/api/regions/europe/forms/1"), headers=maria)
    finally:
        if server is not None:
            server.stop()
        _stop(demo)

    assert ready == 200
    assert status == 200, body
    assert json.loads(body)["headers"]["x-auth-roles"] == "manager:europe"


def _poll_status(url: str, wanted: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    status = 0
    while time.monotonic() < deadline:
        status, _, _ = _http("GET", url)
        if status == wanted:
            break
        time.sleep(0.2)
    return status


def test_keycloak_option_names_what_is_missing(tmp_path: Path) -> None:
    # No java or mvn on PATH and no cached distribution: nothing can start.
    env = {**os.environ, "PATH": str(tmp_path), "EXTAUTHZ_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCH, "--keycloak", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stdout + done.stderr
    assert "java" in done.stderr
    assert "mvn" in done.stderr


# -- the demo's Envoy config stays in step with envoy/envoy.yaml ------------------------------


def _deployment_connection_manager() -> dict[str, Any]:
    (listener,) = load_deployment_config()["static_resources"]["listeners"]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def test_demo_envoy_has_the_deployment_ext_authz_filter_and_path_handling() -> None:
    deployed = _deployment_connection_manager()
    demo = connection_manager()
    (deployed_filter,) = [f for f in deployed["http_filters"] if f["name"] == EXT_AUTHZ_FILTER]

    assert ext_authz_filter() == deployed_filter
    for key in (
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
        "common_http_protocol_options",
        "use_remote_address",
        "xff_num_trusted_hops",
    ):
        assert demo[key] == deployed[key], key
    assert [f["name"] for f in demo["http_filters"]] == [
        f["name"] for f in deployed["http_filters"]
    ]


@pytest.mark.envoy
def test_demo_envoy_config_validates(tmp_path: Path) -> None:
    config = render_config(ext_authz_port=9191, upstream_port=8000, listen_port=0)
    result = validate_config(write_config(config, tmp_path / "demo-envoy.json"))
    assert result.returncode == 0, result.stdout + result.stderr


# -- the dev identity provider answers like Keycloak -----------------------------------------


async def test_dev_idp_introspects_only_for_the_ext_authz_client() -> None:
    provider = idp.DevIdentityProvider(opaque=True)
    await provider.start()
    try:
        async with aiohttp.ClientSession() as session:
            form = {"grant_type": "password", "client_id": "web-app", "username": "alice"}
            async with session.post(provider.token_endpoint, data=form) as resp:
                assert resp.status == 401  # no password
            form["password"] = "alice-pw"
            async with session.post(provider.token_endpoint, data=form) as resp:
                token = (await resp.json())["access_token"]
            introspect = f"{provider.token_endpoint}/introspect"
            wrong = {"Authorization": idp.basic_authorization("ext-authz", "not-the-secret")}
            async with session.post(introspect, data={"token": token}, headers=wrong) as resp:
                assert resp.status == 401
            right = {
                "Authorization": idp.basic_authorization(
                    idp.INTROSPECTING_CLIENT_ID, idp.INTROSPECTING_CLIENT_SECRET
                )
            }
            async with session.post(introspect, data={"token": token}, headers=right) as resp:
                document = await resp.json()
            async with session.post(introspect, data={"token": "nope"}, headers=right) as resp:
                unknown = await resp.json()
    finally:
        await provider.stop()

    assert document["active"] is True
    assert document["token_type"] == "Bearer"
    assert document["realm_access"]["roles"] == ["default-roles-demo", "admin"]
    assert document["resource_access"]["ext-authz"]["roles"] == ["orders.read", "orders.write"]
    assert document["aud"] == ["ext-authz"]
    assert document["username"] == "alice"
    assert document["iss"] == provider.issuer
    assert document["sid"]
    assert document["exp"] > time.time()
    assert unknown == {"active": False}


def test_a_busy_port_is_named_before_anything_starts() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = subprocess.run(
            [sys.executable, "-c", _LAUNCH, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 2
    assert f"port {port} is busy" in result.stderr
    assert "--port 0" in result.stderr
    assert "starting the identity provider" not in result.stdout
