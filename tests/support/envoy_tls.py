"""envoy/envoy-tls.yaml for the tests: the loopback rendering of tests/support/envoy.py, with
the PEM files of the TLS hop to our server pointed at a test CA's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.envoy import ENVOY_YAML, render_loopback_config

ENVOY_TLS_YAML = ENVOY_YAML.with_name("envoy-tls.yaml")


def extauthz_tls_context(config: dict[str, Any]) -> dict[str, Any]:
    """The `UpstreamTlsContext` of the `extauthz` cluster."""
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "extauthz"]
    typed_config: dict[str, Any] = cluster["transport_socket"]["typed_config"]
    return typed_config


def render_tls_loopback_config(
    *,
    ext_authz_port: int,
    upstream_port: int,
    ca_file: Path,
    client_cert_file: Path | None,
    client_key_file: Path | None,
) -> dict[str, Any]:
    """envoy-tls.yaml on loopback, trusting `ca_file` for our server's certificate and
    presenting the client certificate given (none: the `tls_certificates` go)."""
    config = render_loopback_config(
        ext_authz_port=ext_authz_port, upstream_port=upstream_port, source=ENVOY_TLS_YAML
    )
    common = extauthz_tls_context(config)["common_tls_context"]
    common["validation_context"]["trusted_ca"] = {"filename": str(ca_file)}
    if client_cert_file is None or client_key_file is None:
        del common["tls_certificates"]
    else:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": str(client_cert_file)},
                "private_key": {"filename": str(client_key_file)},
            }
        ]
    return config
