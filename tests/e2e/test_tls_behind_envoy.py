"""envoy/envoy-tls.yaml: real Envoy calls our server over mutual TLS, and a request with a valid
token is allowed end to end; an Envoy without the client certificate gets nothing from us,
and the request fails closed."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import Reply, http_get
from tests.support.authz_process import AuthzProcess
from tests.support.certificates import CertificateAuthority, Issued
from tests.support.configs import seed_config_text
from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy import (
    ENVOY_YAML,
    EnvoyProcess,
    load_deployment_config,
    run_envoy,
    validate_config,
    write_config,
)
from tests.support.envoy_tls import (
    ENVOY_TLS_YAML,
    extauthz_tls_context,
    render_tls_loopback_config,
)
from tests.support.keycloak_standin import KeycloakStandIn, active_document

pytestmark = pytest.mark.envoy

BOB = "bob-token"


@dataclass
class Stack:
    server: AuthzProcess
    ca: CertificateAuthority
    envoy_cert: Issued
    upstream_port: int
    workdir: Path

    async def envoy(self, *, with_client_certificate: bool = True) -> EnvoyProcess:
        client = self.envoy_cert if with_client_certificate else None
        config = render_tls_loopback_config(
            ext_authz_port=self.server.grpc_port,
            upstream_port=self.upstream_port,
            ca_file=self.ca.ca_file,
            client_cert_file=None if client is None else client.cert_file,
            client_key_file=None if client is None else client.key_file,
        )
        return await asyncio.to_thread(run_envoy, config, self.workdir / "envoy")


@pytest.fixture
async def stack(tmp_path: Path, echo_upstream: BackgroundEchoUpstream) -> AsyncIterator[Stack]:
    # The stand-in answers on this test's event loop; everything that blocks runs in a thread.
    standin = KeycloakStandIn()
    await standin.start()
    try:
        standin.documents[BOB] = active_document("bob", ["manager"])
        ca = CertificateAuthority(tmp_path / "ca")
        served = ca.server("extauthz")
        text = seed_config_text(
            standin.issuer,
            introspection_endpoint=standin.introspection_endpoint,
            server={
                "tls": {
                    "cert_file": str(served.cert_file),
                    "key_file": str(served.key_file),
                    "client_ca_file": str(ca.ca_file),
                }
            },
        )
        server = await asyncio.to_thread(AuthzProcess.start, text, tmp_path)
        try:
            yield Stack(server, ca, ca.client("envoy"), echo_upstream.port, tmp_path)
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        await standin.stop()


async def get(envoy: EnvoyProcess, path: str, token: str | None = None) -> Reply:
    return await asyncio.to_thread(http_get, envoy, path, token=token)


async def test_a_valid_token_is_allowed_through_envoy_over_mutual_tls(stack: Stack) -> None:
    envoy = await stack.envoy()
    try:
        allowed = await get(envoy, "/api/forms", token=BOB)
        anonymous = await get(envoy, "/api/forms")
    finally:
        envoy.stop()

    assert allowed.status == 200, envoy.log_tail()
    assert allowed.upstream_headers["x-auth-roles"] == "creator"
    assert allowed.upstream_headers["x-auth-username"] == "bob"
    # Our own deny, so the Check did reach us over TLS.
    assert anonymous.status == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")


async def test_envoy_without_the_client_certificate_fails_closed(stack: Stack) -> None:
    envoy = await stack.envoy(with_client_certificate=False)
    try:
        reply = await get(envoy, "/api/forms", token=BOB)
    finally:
        envoy.stop()

    assert reply.status == 503


def test_the_tls_config_is_the_deployment_config_plus_tls_to_the_authorizer() -> None:
    tls_config = load_deployment_config(ENVOY_TLS_YAML)
    context = extauthz_tls_context(tls_config)
    plain = copy.deepcopy(tls_config)
    (cluster,) = [c for c in plain["static_resources"]["clusters"] if c["name"] == "extauthz"]
    del cluster["transport_socket"]

    assert plain == load_deployment_config(ENVOY_YAML)
    # Envoy checks that it speaks to the authorizer's name, and presents its certificate.
    (san,) = context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert san == {"san_type": "DNS", "matcher": {"exact": context["sni"]}}
    assert context["common_tls_context"]["tls_certificates"]
    assert context["common_tls_context"]["alpn_protocols"] == ["h2"]


def test_the_loopback_variant_validates(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    client = ca.client("envoy")
    config = render_tls_loopback_config(
        ext_authz_port=9191,
        upstream_port=8000,
        ca_file=ca.ca_file,
        client_cert_file=client.cert_file,
        client_key_file=client.key_file,
    )

    result = validate_config(write_config(config, tmp_path / "envoy.json"))

    assert result.returncode == 0, result.stdout + result.stderr
