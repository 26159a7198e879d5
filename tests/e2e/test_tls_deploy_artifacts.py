"""Mutual TLS between Envoy and the server as deployed: deploy/tls/make_certs.py writes the
certificates, docker-compose.tls.yml hands them to both containers, and the Kubernetes
Component deploy/kubernetes/tls mounts them from a Secret.

No Docker engine is needed: the compose files are merged by `docker-compose config`, the
one-shot `tls-files` service's script runs here with its mount points moved into a temporary
folder (its chown recorded, not done), and each container path is followed through the
merged mounts to the file it would read. Kustomize builds the Component when kubectl is
installed. The last test runs our server with the compose environment and a real Envoy with
envoy/envoy-tls.yaml, on the files make_certs wrote.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from extauthz_server.config.model import Config, parse_config
from tests.e2e.conftest import Reply, http_get
from tests.support.authz_process import AuthzProcess
from tests.support.configs import seed_config_text
from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy import EnvoyProcess, load_deployment_config, run_envoy
from tests.support.envoy_tls import (
    ENVOY_TLS_YAML,
    extauthz_tls_context,
    render_tls_loopback_config,
)
from tests.support.keycloak_standin import KeycloakStandIn, active_document

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "deploy" / "tls" / "make_certs.py"
CERTS_DIR = ROOT / "deploy" / "tls" / "certs"
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.tls.yml")
EXAMPLE_CONFIG = ROOT / "examples" / "config.yaml"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
TLS_COMPONENT = KUBERNETES / "tls"
TLS_ENV = (
    "EXTAUTHZ__SERVER__TLS__CERT_FILE",
    "EXTAUTHZ__SERVER__TLS__KEY_FILE",
    "EXTAUTHZ__SERVER__TLS__CLIENT_CA_FILE",
)
BOB = "bob-token"


# -- readers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mount:
    source: str  # a host path, or the name of a compose volume
    read_only: bool

    @property
    def is_volume(self) -> bool:
        return not self.source.startswith(("/", "."))


def _mounts(service: dict[str, Any]) -> dict[PurePosixPath, Mount]:
    """Container path → mount, from the short syntax (docker-compose 1) or the long one."""
    mounts: dict[PurePosixPath, Mount] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[PurePosixPath(volume["target"])] = Mount(
                str(volume["source"]), bool(volume.get("read_only"))
            )
        else:
            source, target, *options = str(volume).split(":")
            mounts[PurePosixPath(target)] = Mount(source, "ro" in ",".join(options).split(","))
    return mounts


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """What the `tls-files` service left behind: each compose volume's folder here, and the
    owner its script gave each file."""

    volumes: dict[str, Path]
    owners: dict[Path, str]

    def host_path(self, service: dict[str, Any], container_path: str) -> Path:
        """The file a container path of `service` reads, through its mounts."""
        path = PurePosixPath(container_path)
        mounts = _mounts(service)
        target = max((t for t in mounts if path.is_relative_to(t)), key=lambda t: len(t.parts))
        mount = mounts[target]
        base = self.volumes[mount.source] if mount.is_volume else Path(mount.source)
        return base / path.relative_to(target)


def _tls_socket_files(envoy_config: dict[str, Any]) -> dict[str, str]:
    """The three files envoy/envoy-tls.yaml reads for the hop to us, by role."""
    common = extauthz_tls_context(envoy_config)["common_tls_context"]
    (pair,) = common["tls_certificates"]
    return {
        "certificate": pair["certificate_chain"]["filename"],
        "key": pair["private_key"]["filename"],
        "ca": common["validation_context"]["trusted_ca"]["filename"],
    }


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _verifier_store(ca_file: Path) -> PolicyBuilder:
    return PolicyBuilder().store(Store(x509.load_pem_x509_certificates(ca_file.read_bytes())))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dockerfile_user() -> str:
    """The runtime stage's `USER`, as `user:group`."""
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    user = str(users[-1])
    return user if ":" in user else f"{user}:{user}"


def _make_certs(directory: Path, *arguments: str) -> Path:
    done = subprocess.run(
        [sys.executable, str(MAKE_CERTS), str(directory), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return directory


def _docker_compose() -> str:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.tls.yml cannot be validated; "
            "install it (Debian: apt-get install docker-compose)"
        )
    return executable


def _compose_config(*options: str) -> subprocess.CompletedProcess[str]:
    files = [argument for path in COMPOSE_FILES for argument in ("--file", str(path))]
    return subprocess.run(
        [_docker_compose(), *files, "config", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_certs(tmp_path_factory.mktemp("make-certs") / "certs")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    done = _compose_config()
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)
    found: dict[str, Any] = merged["services"]
    return found


@pytest.fixture(scope="module")
def tls_files(
    services: dict[str, Any], certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> TlsFiles:
    """Run the `tls-files` service's script as its container would, with each of its mount
    points moved here: the certificates folder to make_certs' output, each volume to a
    folder of its own."""
    service = services["tls-files"]
    workdir = tmp_path_factory.mktemp("tls-files")
    volumes: dict[str, Path] = {}
    here: dict[PurePosixPath, Path] = {}
    for target, mount in _mounts(service).items():
        if mount.is_volume:
            volumes[mount.source] = here[target] = workdir / mount.source
            here[target].mkdir()
        else:
            assert Path(mount.source) == CERTS_DIR, "it copies what make_certs wrote"
            assert mount.read_only
            here[target] = certs
    (script,) = service["command"]
    for target, local in sorted(here.items(), key=lambda item: -len(str(item[0]))):
        pattern = rf"(?<![\w./-]){re.escape(str(target))}(?=/|\s|$)"
        script = re.sub(pattern, str(local).replace("\\", "\\\\"), script)
    # The owners are the containers' users, which this machine may not have: record them.
    chowns = workdir / "chowns"
    record = f'chown() {{ printf "%s %s\\n" "$1" "$2" >> "{chowns}"; }}\n'
    done = subprocess.run(
        [*service["entrypoint"], record + script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    owners: dict[Path, str] = {}
    for line in chowns.read_text(encoding="utf-8").splitlines():
        owner, path = line.split(" ", 1)
        owners[Path(path)] = owner
    return TlsFiles(volumes, owners)


@pytest.fixture(scope="module")
def tls_environ(services: dict[str, Any], tls_files: TlsFiles) -> dict[str, str]:
    """The server's TLS overrides, each path replaced by the file the container would read."""
    service = services["extauthz"]
    environ = service["environment"]
    return {name: str(tls_files.host_path(service, environ[name])) for name in TLS_ENV}


@pytest.fixture(scope="module")
def tls_config(services: dict[str, Any], tls_environ: dict[str, str]) -> Config:
    environ = {name: str(value) for name, value in services["extauthz"]["environment"].items()}
    return parse_config(
        EXAMPLE_CONFIG.read_text(encoding="utf-8"),
        {**environ, **tls_environ},
        EXAMPLE_CONFIG.parent,
    )


# -- make_certs ------------------------------------------------------------------------------


def test_make_certs_writes_the_five_files_with_private_keys_and_no_ca_key(certs: Path) -> None:
    modes = {path.name: _mode(path) for path in certs.iterdir()}

    assert modes == {
        "ca.pem": 0o644,
        "extauthz.pem": 0o644,
        "extauthz-key.pem": 0o600,
        "client.pem": 0o644,
        "client-key.pem": 0o600,
    }
    assert _mode(certs) == 0o700


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("extauthz"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ],
    ids=["extauthz", "localhost", "127.0.0.1"],
)
def test_the_server_certificate_chains_to_the_ca_for_each_of_its_names(
    certs: Path, name: x509.DNSName | x509.IPAddress
) -> None:
    verifier = _verifier_store(certs / "ca.pem").build_server_verifier(name)

    chain = verifier.verify(_certificate(certs / "extauthz.pem"), [])

    assert chain[-1] == _certificate(certs / "ca.pem")


def test_the_client_certificate_is_for_client_authentication_only(certs: Path) -> None:
    client = _certificate(certs / "client.pem")
    builder = _verifier_store(certs / "ca.pem")

    builder.build_client_verifier().verify(client, [])
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("envoy")).verify(client, [])


def test_certificates_are_p256_and_valid_for_ninety_days(certs: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    for name in ("ca.pem", "extauthz.pem", "client.pem"):
        certificate = _certificate(certs / name)
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
        assert certificate.not_valid_before_utc <= now
        lifetime = certificate.not_valid_after_utc - now
        assert datetime.timedelta(days=89) < lifetime <= datetime.timedelta(days=90)


def test_a_dns_name_option_adds_a_name_and_running_again_makes_a_new_ca(
    certs: Path, tmp_path: Path
) -> None:
    again = _make_certs(
        shutil.copytree(certs, tmp_path / "certs"), "--dns-name", "extauthz-server.auth.svc"
    )
    builder = _verifier_store(again / "ca.pem")

    builder.build_server_verifier(x509.DNSName("extauthz-server.auth.svc")).verify(
        _certificate(again / "extauthz.pem"), []
    )
    assert (again / "ca.pem").read_bytes() != (certs / "ca.pem").read_bytes()
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in certs.iterdir())


# -- docker-compose.tls.yml ------------------------------------------------------------------


def test_the_tls_override_passes_docker_compose_config() -> None:
    done = _compose_config("--quiet")

    assert done.returncode == 0, done.stdout + done.stderr


def test_the_merged_extauthz_environment_turns_on_mutual_tls_with_make_certs_files(
    services: dict[str, Any], tls_config: Config, tls_environ: dict[str, str]
) -> None:
    tls = tls_config.server.tls

    assert tls is not None
    assert tls.mutual
    assert str(tls.cert_file) == tls_environ["EXTAUTHZ__SERVER__TLS__CERT_FILE"]
    assert str(tls.client_ca_file) == tls_environ["EXTAUTHZ__SERVER__TLS__CLIENT_CA_FILE"]
    # The base file's overrides still apply.
    assert tls_config.provider.issuer == "http://keycloak:8080/realms/demo"
    assert services["extauthz"]["depends_on"]["tls-files"] == {
        "condition": "service_completed_successfully"
    }


def test_the_healthcheck_still_asks_the_plaintext_ops_listener(
    services: dict[str, Any], tls_config: Config
) -> None:
    http_port = int(tls_config.server.http_listen.rpartition(":")[2])
    test = " ".join(services["extauthz"]["healthcheck"]["test"])

    assert f"http://127.0.0.1:{http_port}/healthz" in test


def test_envoy_runs_envoy_tls_yaml_and_reads_the_certificates_tls_files_left_it(
    services: dict[str, Any], tls_files: TlsFiles
) -> None:
    envoy = services["envoy"]
    config_path = envoy["command"][envoy["command"].index("-c") + 1]
    mounts = _mounts(envoy)

    assert mounts[PurePosixPath(config_path)] == Mount(str(ENVOY_TLS_YAML), read_only=True)
    files = _tls_socket_files(load_deployment_config(ENVOY_TLS_YAML))
    for container_path in files.values():
        assert tls_files.host_path(envoy, container_path).is_file(), container_path
    (tls_mount,) = {mounts[t] for t in mounts if PurePosixPath(files["key"]).is_relative_to(t)}
    assert tls_mount.is_volume
    assert tls_mount.read_only
    assert envoy["depends_on"]["tls-files"] == {"condition": "service_completed_successfully"}


def test_each_side_accepts_the_certificate_the_other_presents(
    services: dict[str, Any], tls_files: TlsFiles, tls_environ: dict[str, str]
) -> None:
    envoy_tls = load_deployment_config(ENVOY_TLS_YAML)
    files = {
        role: tls_files.host_path(services["envoy"], path)
        for role, path in _tls_socket_files(envoy_tls).items()
    }
    (san,) = extauthz_tls_context(envoy_tls)["common_tls_context"]["validation_context"][
        "match_typed_subject_alt_names"
    ]
    served = _certificate(Path(tls_environ["EXTAUTHZ__SERVER__TLS__CERT_FILE"]))
    client_ca = Path(tls_environ["EXTAUTHZ__SERVER__TLS__CLIENT_CA_FILE"])

    # Envoy's check of our certificate: its CA file, and the name its matcher requires.
    _verifier_store(files["ca"]).build_server_verifier(
        x509.DNSName(san["matcher"]["exact"])
    ).verify(served, [])
    # Our check of Envoy's: the client CA file.
    _verifier_store(client_ca).build_client_verifier().verify(
        _certificate(files["certificate"]), []
    )


def test_tls_files_gives_each_key_to_its_reader_alone(
    services: dict[str, Any], tls_files: TlsFiles, tls_environ: dict[str, str]
) -> None:
    server_key = Path(tls_environ["EXTAUTHZ__SERVER__TLS__KEY_FILE"])
    envoy_key_path = _tls_socket_files(load_deployment_config(ENVOY_TLS_YAML))["key"]
    envoy_key = tls_files.host_path(services["envoy"], envoy_key_path)

    assert tls_files.owners == {server_key: _dockerfile_user(), envoy_key: "envoy:envoy"}
    assert _mode(server_key) == _mode(envoy_key) == 0o400
    # Neither volume holds the other side's key; certificates are readable by anyone.
    assert {p.name for p in server_key.parent.iterdir()} == {
        "ca.pem",
        "extauthz.pem",
        "extauthz-key.pem",
    }
    assert {p.name for p in envoy_key.parent.iterdir()} == {
        "ca.pem",
        "client.pem",
        "client-key.pem",
    }
    for directory in tls_files.volumes.values():
        for path in directory.iterdir():
            if not path.name.endswith("-key.pem"):
                assert _mode(path) == 0o444, path


def test_tls_files_runs_envoys_image_without_network_or_spare_capabilities(
    services: dict[str, Any],
) -> None:
    service = services["tls-files"]

    # No image of its own to pull or pin: Envoy's, which knows the `envoy` user.
    assert service["image"] == services["envoy"]["image"]
    assert service["network_mode"] == "none"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert set(service["cap_add"]) == {"CHOWN", "DAC_OVERRIDE"}


def test_generated_certificates_are_not_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", str(CERTS_DIR / "extauthz-key.pem")],
        cwd=ROOT,
        timeout=30,
        check=False,
    )

    assert ignored.returncode == 0


# -- deploy/kubernetes/tls -------------------------------------------------------------------


def _patch() -> dict[str, Any]:
    document = yaml.safe_load((TLS_COMPONENT / "deployment-tls.yaml").read_text("utf-8"))
    assert isinstance(document, dict)
    return document


def _base_deployment() -> dict[str, Any]:
    document = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text("utf-8"))
    assert isinstance(document, dict)
    return document


def test_the_component_patches_the_base_deployment_with_the_compose_overrides(
    services: dict[str, Any],
) -> None:
    component = yaml.safe_load((TLS_COMPONENT / "kustomization.yaml").read_text("utf-8"))
    patch = _patch()
    base = _base_deployment()
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    (base_container,) = base["spec"]["template"]["spec"]["containers"]

    assert component["kind"] == "Component"
    assert component["patches"] == [{"path": "deployment-tls.yaml"}]
    assert (patch["kind"], patch["metadata"]) == (
        "Deployment",
        {
            "name": base["metadata"]["name"],
            "namespace": base["metadata"]["namespace"],
        },
    )
    assert container["name"] == base_container["name"]
    assert {variable["name"] for variable in container["env"]} == set(TLS_ENV)
    assert set(TLS_ENV) <= set(services["extauthz"]["environment"])


def test_the_overrides_point_into_the_secret_mount_at_its_tls_keys() -> None:
    pod = _patch()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    paths = {v["name"]: PurePosixPath(v["value"]) for v in container["env"]}
    base_pod = _base_deployment()["spec"]["template"]["spec"]
    (base_container,) = base_pod["containers"]

    assert mount["name"] == volume["name"]
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "extauthz-tls"
    assert {name: path.parent for name, path in paths.items()} == dict.fromkeys(
        TLS_ENV, PurePosixPath(mount["mountPath"])
    )
    # The keys of a kubernetes.io/tls Secret, ca.crt as cert-manager writes it.
    assert {name: path.name for name, path in paths.items()} == {
        "EXTAUTHZ__SERVER__TLS__CERT_FILE": "tls.crt",
        "EXTAUTHZ__SERVER__TLS__KEY_FILE": "tls.key",
        "EXTAUTHZ__SERVER__TLS__CLIENT_CA_FILE": "ca.crt",
    }
    # The key is readable by the server's group only, which the pod's fsGroup gives it.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == base_pod["securityContext"]["runAsGroup"]
    # Not nested in the read-only config volume.
    for base_mount in base_container["volumeMounts"]:
        assert not PurePosixPath(mount["mountPath"]).is_relative_to(base_mount["mountPath"])


def test_the_secret_keys_hold_what_make_certs_writes_and_the_config_parses(
    certs: Path, tmp_path: Path
) -> None:
    # `kubectl create secret generic extauthz-tls --from-file=tls.crt=extauthz.pem ...`,
    # as the Component's comment says, then the pod's environment applied to the ConfigMap.
    secret = tmp_path / "extauthz-tls"
    secret.mkdir()
    for key, name in {
        "tls.crt": "extauthz.pem",
        "tls.key": "extauthz-key.pem",
        "ca.crt": "ca.pem",
    }.items():
        shutil.copy(certs / name, secret / key)
    (container,) = _patch()["spec"]["template"]["spec"]["containers"]
    environ = {v["name"]: str(secret / PurePosixPath(v["value"]).name) for v in container["env"]}
    configmap = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text("utf-8"))
    secrets = {"EXTAUTHZ_CLIENT_SECRET": "x" * 32, "REDIS_PASSWORD": "redis-password"}

    config = parse_config(configmap["data"]["config.yaml"], {**secrets, **environ})

    assert config.server.tls is not None
    assert config.server.tls.mutual


def test_kustomize_builds_the_base_with_the_component(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Component is checked as YAML only")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    document = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(KUBERNETES, overlay)],
        "components": [os.path.relpath(TLS_COMPONENT, overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")

    done = subprocess.run(
        [kubectl, "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    (deployment,) = [d for d in yaml.safe_load_all(done.stdout) if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {variable["name"] for variable in container["env"]}
    assert set(TLS_ENV) | {"EXTAUTHZ_CLIENT_SECRET", "REDIS_PASSWORD"} == env
    assert {v["name"] for v in pod["volumes"]} == {"config", "tls"}
    assert pod["securityContext"]["runAsNonRoot"] is True


# -- end to end ------------------------------------------------------------------------------


@dataclass
class Stack:
    server: AuthzProcess
    envoy: EnvoyProcess


@pytest.fixture
async def stack(
    services: dict[str, Any],
    tls_files: TlsFiles,
    tls_environ: dict[str, str],
    echo_upstream: BackgroundEchoUpstream,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    standin = KeycloakStandIn()
    await standin.start()
    try:
        standin.documents[BOB] = active_document("bob", ["manager"])
        text = seed_config_text(
            standin.issuer, introspection_endpoint=standin.introspection_endpoint
        )
        # The compose service's TLS environment, its paths the files the container reads.
        server = await asyncio.to_thread(AuthzProcess.start, text, tmp_path, tls_environ)
        try:
            files = {
                role: tls_files.host_path(services["envoy"], path)
                for role, path in _tls_socket_files(load_deployment_config(ENVOY_TLS_YAML)).items()
            }
            config = render_tls_loopback_config(
                ext_authz_port=server.grpc_port,
                upstream_port=echo_upstream.port,
                ca_file=files["ca"],
                client_cert_file=files["certificate"],
                client_key_file=files["key"],
            )
            envoy = await asyncio.to_thread(run_envoy, config, tmp_path / "envoy")
            try:
                yield Stack(server, envoy)
            finally:
                envoy.stop()
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        await standin.stop()


@pytest.mark.envoy
async def test_envoy_with_envoy_tls_yaml_gets_answers_over_make_certs_certificates(
    stack: Stack,
) -> None:
    allowed: Reply = await asyncio.to_thread(http_get, stack.envoy, "/api/forms", token=BOB)
    anonymous: Reply = await asyncio.to_thread(http_get, stack.envoy, "/api/forms")

    assert allowed.status == 200, stack.envoy.log_tail()
    assert allowed.upstream_headers["x-auth-roles"] == "creator"
    # Our own deny: the Check reached us over mutual TLS.
    assert anonymous.status == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
