"""envoy/envoy.yaml, envoy/envoy-http.yaml and the loopback variants the e2e tests run pass
`--mode validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.envoy import (
    ENVOY_HTTP_YAML,
    ENVOY_YAML,
    EXT_AUTHZ_FILTER,
    load_deployment_config,
    render_loopback_config,
    validate_config,
    write_config,
)

pytestmark = pytest.mark.envoy


@pytest.mark.parametrize("source", [ENVOY_YAML, ENVOY_HTTP_YAML], ids=["grpc", "http"])
def test_deployment_config_validates(source: Path) -> None:
    result = validate_config(source)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", [ENVOY_YAML, ENVOY_HTTP_YAML], ids=["grpc", "http"])
def test_loopback_variant_validates(tmp_path: Path, source: Path) -> None:
    timeout_s = 1.5 if source == ENVOY_YAML else None
    config = render_loopback_config(
        ext_authz_port=9191, upstream_port=8000, timeout_s=timeout_s, source=source
    )
    result = validate_config(write_config(config, tmp_path / "envoy.json"))
    assert result.returncode == 0, result.stdout + result.stderr


def _ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_authz,) = [f for f in hcm["http_filters"] if f["name"] == EXT_AUTHZ_FILTER]
    typed_config: dict[str, Any] = ext_authz["typed_config"]
    return typed_config


def test_deployment_config_fails_closed() -> None:
    ext_authz = _ext_authz(load_deployment_config())
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert ext_authz["grpc_service"] == {
        "envoy_grpc": {"cluster_name": "extauthz"},
        "timeout": "0.25s",
    }
    assert "with_request_body" not in ext_authz


def test_a_dead_replica_leaves_the_rotation_by_health_check_and_outlier_detection() -> None:
    clusters = {c["name"]: c for c in load_deployment_config()["static_resources"]["clusters"]}
    extauthz = clusters["extauthz"]

    (check,) = extauthz["health_checks"]
    assert check["grpc_health_check"] == {"service_name": "envoy.service.auth.v3.Authorization"}
    outlier = extauthz["outlier_detection"]
    # Unreachable replicas are ejected; slow ones and our denies never are.
    assert outlier["split_external_local_origin_errors"] is True
    assert (
        outlier["enforcing_consecutive_5xx"]
        == outlier["enforcing_consecutive_gateway_failure"]
        == 0
    )


def test_http_deployment_config_fails_closed_and_passes_only_identity_headers_upstream() -> None:
    ext_authz = _ext_authz(load_deployment_config(ENVOY_HTTP_YAML))
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
    service = ext_authz["http_service"]
    assert service["path_prefix"] == "/envoy"
    response = service["authorization_response"]
    assert response["allowed_upstream_headers"] == {"patterns": [{"prefix": "x-auth-"}]}
    assert {p["exact"] for p in response["allowed_client_headers"]["patterns"]} == {
        "www-authenticate",
        "content-type",
    }


def test_loopback_variant_changes_only_addresses_and_timeout() -> None:
    deployed = load_deployment_config()
    rendered = render_loopback_config(ext_authz_port=1, upstream_port=2, timeout_s=0.5)
    assert _ext_authz(rendered) == {
        **_ext_authz(deployed),
        "grpc_service": {**_ext_authz(deployed)["grpc_service"], "timeout": "0.500s"},
    }
    (listener,) = rendered["static_resources"]["listeners"]
    assert listener["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    assert {c["name"]: c["type"] for c in rendered["static_resources"]["clusters"]} == {
        "app": "STATIC",
        "extauthz": "STATIC",
    }
