"""The Dockerfile, docker-compose.yml and the demo realm agree with what the server serves.

No Docker engine is needed: compose is checked with `docker-compose config -q` and read as
YAML, the Dockerfile is read line by line, and every port and path is compared with the
example configuration, envoy/envoy.yaml and the server's own routes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from extauthz_server.config.model import Config, parse_config
from extauthz_server.edges.http_app import LOGOUT_PATH

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXAMPLE_CONFIG = ROOT / "examples" / "config.yaml"
ENVOY_YAML = ROOT / "envoy" / "envoy.yaml"
REALM_FILE = ROOT / "keycloak" / "demo-realm.json"

_ARG_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


# -- readers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str


def _dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with `\\` continuations joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued instruction"
    return instructions


def _stages(instructions: list[Instruction]) -> tuple[dict[str, str], list[list[Instruction]]]:
    """ARG defaults declared before the first FROM, and the instructions of each stage."""
    global_args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([instruction])
        elif stages:
            stages[-1].append(instruction)
        elif instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            global_args[name.strip()] = default.strip()
    return global_args, stages


def _from_image(instruction: Instruction, args: dict[str, str]) -> tuple[str, str | None]:
    """(image reference with ARGs substituted, stage name or None)."""
    words = [w for w in instruction.arguments.split() if not w.startswith("--")]
    image = _ARG_REFERENCE.sub(lambda m: args[m.group(1)], words[0])
    alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
    return image, alias


def _is_pinned(image: str) -> bool:
    """A digest, or a tag that is neither absent nor a moving `latest`."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag at all (the colon belonged to a registry port)
        return False
    return tag != "latest" and not tag.endswith("-latest")


def _listen_port(address: str) -> int:
    return int(address.rpartition(":")[2])


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[list[Instruction]]]:
    return _stages(_dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="module")
def example_config() -> Config:
    return parse_config(
        EXAMPLE_CONFIG.read_text(encoding="utf-8"),
        {"EXTAUTHZ_CLIENT_SECRET": "x" * 32},
        EXAMPLE_CONFIG.parent,
    )


@pytest.fixture(scope="module")
def envoy_config() -> dict[str, Any]:
    document = yaml.safe_load(ENVOY_YAML.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _envoy_cluster_address(envoy: dict[str, Any], name: str) -> tuple[str, int]:
    (cluster,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == name]
    (endpoints,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = endpoints["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    return str(address["address"]), int(address["port_value"])


def _healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path → (host path, options) for short-syntax volumes."""
    mounts: dict[str, tuple[str, str]] = {}
    for volume in service.get("volumes", []):
        host, container, *options = str(volume).split(":")
        mounts[container] = (host, ",".join(options))
    return mounts


# -- docker-compose --------------------------------------------------------------------------


def test_compose_file_passes_docker_compose_config() -> None:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yml cannot be validated; "
            "install it (Debian: apt-get install docker-compose)"
        )
    done = subprocess.run(
        [executable, "--file", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_compose_image_is_pinned(services: dict[str, Any]) -> None:
    images = {name: s["image"] for name, s in services.items() if "image" in s}
    unpinned = {name: image for name, image in images.items() if not _is_pinned(image)}
    assert not unpinned
    assert images["keycloak"] == "quay.io/keycloak/keycloak:26.7.3"
    assert re.fullmatch(r"envoyproxy/envoy:v1\.40\.\d+", images["envoy"])
    assert re.fullmatch(r"redis:7\.\d+\.\d+", images["redis"])


def test_extauthz_service_runs_the_example_config_against_keycloak_and_redis(
    services: dict[str, Any], dockerfile: tuple[dict[str, str], list[list[Instruction]]]
) -> None:
    service = services["extauthz"]
    env = {name: str(value) for name, value in service["environment"].items()}
    _, stages = dockerfile
    (cmd,) = [i for i in stages[-1] if i.keyword == "CMD"]
    config_path = json.loads(cmd.arguments)[-1]

    assert service["build"] == "."
    assert _mounts(service)[config_path] == ("./examples/config.yaml", "ro")
    # The compose environment applied to the mounted file, as the server will read it.
    config = parse_config(EXAMPLE_CONFIG.read_text(encoding="utf-8"), env, EXAMPLE_CONFIG.parent)
    assert config.provider.issuer == "http://keycloak:8080/realms/demo"
    assert config.cache.redis_url == "redis://redis:6379/0"
    assert config.provider.logout_audiences == frozenset({"web-app"})
    assert {"keycloak", "redis"} <= set(services)
    assert service["depends_on"]["keycloak"] == {"condition": "service_healthy"}
    assert service["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert service["read_only"] is True


def test_extauthz_healthcheck_calls_healthz_on_the_http_port(
    services: dict[str, Any], example_config: Config
) -> None:
    command = _healthcheck_command(services["extauthz"])
    http_port = _listen_port(example_config.server.http_listen)
    assert f"http://127.0.0.1:{http_port}/healthz" in command
    assert "curl" not in command  # the slim image has none


def test_keycloak_and_redis_have_healthchecks(services: dict[str, Any]) -> None:
    keycloak = services["keycloak"]
    assert "/dev/tcp/127.0.0.1/9000" in _healthcheck_command(keycloak)
    assert "/health/ready" in _healthcheck_command(keycloak)
    assert keycloak["command"] == ["start-dev", "--import-realm"]
    assert keycloak["environment"]["KC_HOSTNAME"] == "http://localhost:8081"
    assert keycloak["environment"]["KC_HOSTNAME_BACKCHANNEL_DYNAMIC"] == "true"
    assert "8081:8080" in keycloak["ports"]
    assert _mounts(keycloak)["/opt/keycloak/data/import/demo-realm.json"] == (
        "./keycloak/demo-realm.json",
        "ro",
    )
    assert _healthcheck_command(services["redis"]) == "CMD redis-cli ping"


def test_envoy_reaches_extauthz_and_app_where_compose_runs_them(
    services: dict[str, Any], envoy_config: dict[str, Any], example_config: Config
) -> None:
    assert _envoy_cluster_address(envoy_config, "extauthz") == (
        "extauthz",
        _listen_port(example_config.server.grpc_listen),
    )
    app_host, app_port = _envoy_cluster_address(envoy_config, "app")
    assert app_host == "app"
    assert int(services["app"]["environment"]["HTTP_PORT"]) == app_port

    envoy = services["envoy"]
    config_path = envoy["command"][envoy["command"].index("-c") + 1]
    assert _mounts(envoy)[config_path] == ("./envoy/envoy.yaml", "ro")
    (listener,) = envoy_config["static_resources"]["listeners"]
    listen_port = int(listener["address"]["socket_address"]["port_value"])
    assert f"8080:{listen_port}" in envoy["ports"]
    assert envoy["depends_on"]["extauthz"] == {"condition": "service_healthy"}


def test_only_keycloak_and_envoy_are_published(services: dict[str, Any]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"keycloak", "envoy"}


# -- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_pinned_bases(
    dockerfile: tuple[dict[str, str], list[list[Instruction]]],
) -> None:
    args, stages = dockerfile
    images = [_from_image(stage[0], args) for stage in stages]

    assert len(stages) >= 2
    for image, _alias in images:
        assert _is_pinned(image), image
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), image
    builder = images[0][1]
    assert builder is not None
    runtime = " ".join(i.arguments for i in stages[-1])
    assert f"from={builder}" in runtime or f"--from={builder}" in runtime
    assert "pip wheel" in " ".join(i.arguments for i in stages[0])


def test_dockerfile_runs_as_a_non_root_user(
    dockerfile: tuple[dict[str, str], list[list[Instruction]]],
) -> None:
    _, stages = dockerfile
    users = [i.arguments for i in stages[-1] if i.keyword == "USER"]

    assert users, "the runtime stage has no USER: it would run as root"
    user = users[-1].partition(":")[0]
    assert user not in {"root", "0"}
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert user.isdigit()


def test_dockerfile_exposes_the_configured_ports_and_checks_healthz(
    dockerfile: tuple[dict[str, str], list[list[Instruction]]], example_config: Config
) -> None:
    _, stages = dockerfile
    runtime = stages[-1]
    exposed = {int(port) for i in runtime if i.keyword == "EXPOSE" for port in i.arguments.split()}
    (healthcheck,) = [i.arguments for i in runtime if i.keyword == "HEALTHCHECK"]
    http_port = _listen_port(example_config.server.http_listen)

    assert example_config.server.logout_listen is not None
    assert exposed == {
        _listen_port(example_config.server.grpc_listen),
        http_port,
        _listen_port(example_config.server.logout_listen),
    }
    assert f"http://127.0.0.1:{http_port}/healthz" in healthcheck
    assert "urllib" in healthcheck
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(i.arguments for i in runtime)


# -- the demo realm --------------------------------------------------------------------------


def test_the_example_keeps_operational_endpoints_on_loopback_and_logouts_reachable(
    example_config: Config,
) -> None:
    # Metrics and health are for operators; Keycloak must reach the logout endpoint.
    assert example_config.server.http_listen.startswith("127.0.0.1:")
    assert example_config.server.logout_listen == "0.0.0.0:8282"
    assert example_config.server.grpc_listen.startswith("0.0.0.0:")


def test_realm_sends_web_app_logouts_to_the_extauthz_service(
    services: dict[str, Any], example_config: Config
) -> None:
    realm = json.loads(REALM_FILE.read_text(encoding="utf-8"))
    (web_app,) = [c for c in realm["clients"] if c["clientId"] == "web-app"]
    url = urlsplit(web_app["attributes"]["backchannel.logout.url"])

    assert url.hostname == "extauthz"
    assert "extauthz" in services
    assert example_config.server.logout_listen is not None
    assert url.port == _listen_port(example_config.server.logout_listen)
    assert url.path == LOGOUT_PATH == "/backchannel-logout"
    assert web_app["frontchannelLogout"] is False
    assert web_app["attributes"]["backchannel.logout.session.required"] == "true"


def test_sidecars_eject_a_failing_replica_of_the_service_they_ask() -> None:
    rule = yaml.safe_load((ROOT / "deploy" / "istio" / "destination-rule.yaml").read_text())
    mesh = yaml.safe_load((ROOT / "deploy" / "istio" / "mesh-config.yaml").read_text())
    (provider,) = mesh["spec"]["meshConfig"]["extensionProviders"]

    assert rule["kind"] == "DestinationRule"
    assert rule["spec"]["host"] == provider["envoyExtAuthzGrpc"]["service"]
    outlier = rule["spec"]["trafficPolicy"]["outlierDetection"]
    assert outlier["consecutiveGatewayErrors"] == 1
    assert outlier["maxEjectionPercent"] <= 50  # never eject every replica
