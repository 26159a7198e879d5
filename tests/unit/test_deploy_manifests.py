"""deploy/kubernetes and deploy/istio agree with each other and with the server's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz_server.config.model import Config, parse_config
from extauthz_server.core.secret import Secret


def revealed(secret: Secret | None) -> str:
    assert secret is not None
    return secret.reveal()


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
ISTIO = DEPLOY / "istio"
APP_LABEL = {"app.kubernetes.io/name": "extauthz-server"}

Manifest = dict[str, Any]


def _documents(directory: Path) -> list[Manifest]:
    documents: list[Manifest] = []
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert isinstance(document, dict), path
            documents.append(document)
    return documents


def _one(documents: list[Manifest], kind: str) -> Manifest:
    (found,) = [d for d in documents if d.get("kind") == kind]
    return found


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return _documents(KUBERNETES)


@pytest.fixture(scope="module")
def container(manifests: list[Manifest]) -> Manifest:
    (found,) = _one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def environ(manifests: list[Manifest], container: Manifest) -> dict[str, str]:
    """The container's environment, secretKeyRefs resolved against the Secret manifest."""
    secret = _one(manifests, "Secret")
    values: dict[str, str] = {}
    for variable in container["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        values[variable["name"]] = secret["stringData"][ref["key"]]
    return values


@pytest.fixture(scope="module")
def config(manifests: list[Manifest], environ: dict[str, str]) -> Config:
    return parse_config(_one(manifests, "ConfigMap")["data"]["config.yaml"], environ)


def test_every_manifest_is_in_the_auth_namespace_and_listed_in_kustomization(
    manifests: list[Manifest],
) -> None:
    kustomization = _one(manifests, "Kustomization")
    listed = {KUBERNETES / name for name in kustomization["resources"]}
    on_disk = set(KUBERNETES.glob("*.yaml")) - {KUBERNETES / "kustomization.yaml"}

    assert listed == on_disk
    kinds = {d["kind"] for d in manifests} - {"Kustomization"}
    assert kinds == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for document in manifests:
        if document["kind"] != "Kustomization":
            assert document["metadata"]["namespace"] == "auth", document["kind"]
            assert document["metadata"]["name"] == "extauthz-server", document["kind"]


def test_config_map_parses_with_the_secret_in_the_environment(
    config: Config, environ: dict[str, str]
) -> None:
    assert revealed(config.provider.client_secret) == environ["EXTAUTHZ_CLIENT_SECRET"]
    assert config.cache.redis_url is not None
    assert environ["REDIS_PASSWORD"] in config.cache.redis_url
    assert config.provider.logout_audiences == frozenset({"web-app"})
    assert config.server.workers == 1


def test_config_map_holds_no_secret_value(manifests: list[Manifest]) -> None:
    text = _one(manifests, "ConfigMap")["data"]["config.yaml"]
    for value in _one(manifests, "Secret")["stringData"].values():
        assert value not in text


def test_container_and_service_ports_are_the_configured_listen_ports(
    manifests: list[Manifest], container: Manifest, config: Config
) -> None:
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = _one(manifests, "Service")
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}

    assert container_ports == {
        "grpc": _port(config.server.grpc_listen),
        "http": _port(config.server.http_listen),
    }
    assert service_ports == {"grpc": (9191, "grpc"), "http": (8181, "http")}
    # Istio picks the protocol from the port name / appProtocol: gRPC needs HTTP/2.
    (grpc_port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc_port["appProtocol"] == "grpc"
    assert service["spec"]["selector"] == APP_LABEL


def test_probes_use_readyz_and_healthz_on_the_http_port(container: Manifest) -> None:
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_config_is_mounted_where_the_container_reads_it(
    manifests: list[Manifest], container: Manifest
) -> None:
    pod = _one(manifests, "Deployment")["spec"]["template"]["spec"]
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    config_path = container["args"][container["args"].index("--config") + 1]

    assert mount["readOnly"] is True
    assert mount["name"] == volume["name"]
    assert volume["configMap"]["name"] == "extauthz-server"
    (item,) = volume["configMap"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == config_path


def test_pod_runs_non_root_with_a_read_only_root_file_system(
    manifests: list[Manifest], container: Manifest, config: Config
) -> None:
    pod = _one(manifests, "Deployment")["spec"]["template"]["spec"]
    security = container["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] > config.server.grace_period_s
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]


def test_autoscaler_and_disruption_budget_target_the_deployment(
    manifests: list[Manifest],
) -> None:
    deployment = _one(manifests, "Deployment")
    hpa = _one(manifests, "HorizontalPodAutoscaler")
    pdb = _one(manifests, "PodDisruptionBudget")

    assert deployment["spec"]["selector"]["matchLabels"] == APP_LABEL
    assert deployment["spec"]["template"]["metadata"]["labels"] == APP_LABEL
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert pdb["spec"]["selector"]["matchLabels"] == APP_LABEL
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_istio_provider_points_at_the_service_grpc_port_and_matches_the_policy(
    manifests: list[Manifest], config: Config
) -> None:
    istio = _documents(ISTIO)
    service = _one(manifests, "Service")
    (provider,) = _one(istio, "IstioOperator")["spec"]["meshConfig"]["extensionProviders"]
    policy = _one(istio, "AuthorizationPolicy")
    grpc = provider["envoyExtAuthzGrpc"]
    service_host = (
        f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    )

    assert grpc["service"] == service_host
    assert grpc["port"] == _port(config.server.grpc_listen) == 9191
    assert grpc["failOpen"] is False
    # The provider's budget must leave room for the server's own introspection bound.
    assert float(grpc["timeout"].removesuffix("s")) > config.provider.timeout_s
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"]["name"] == provider["name"]
    assert policy["spec"]["rules"] == [{}]
