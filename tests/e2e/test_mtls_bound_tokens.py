"""Certificate-bound access tokens (RFC 8705) end to end, everything real: Keycloak serving
HTTPS binds bob's mtls-app token to the client certificate of his token request; bob calls
through Envoy (envoy/envoy-client-mtls.yaml) over TLS with that certificate; Envoy hands it to
our server with the Check; our server introspects the token over Keycloak's back channel and
compares `cnf.x5t#S256` with the certificate's thumbprint.

This Keycloak is a second one, started for this module only (HTTPS with client
authentication, the mtls realm): 30-60 s. Client authentication is a build-time option, so the
first start ever also prepares a Keycloak tree of its own, about 30 s more, kept in the cache.
"""

from __future__ import annotations

import copy
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.e2e.conftest import Reply
from tests.support.authz_process import AuthzProcess
from tests.support.certificates import CertificateAuthority, Issued
from tests.support.configs import seed_config_text
from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy import (
    ENVOY_YAML,
    EXT_AUTHZ_FILTER,
    EnvoyProcess,
    load_deployment_config,
    render_loopback_config,
    run_envoy,
    validate_config,
    write_config,
)
from tests.support.keycloak import KeycloakError, default_cache_dir
from tests.support.keycloak_https import (
    MTLS_APP_CLIENT_ID,
    MTLS_EXT_AUTHZ_SECRET,
    PLAIN_APP_CLIENT_ID,
    HttpsKeycloak,
    start_https_keycloak,
)

pytestmark = pytest.mark.envoy

ENVOY_CLIENT_MTLS_YAML = ENVOY_YAML.with_name("envoy-client-mtls.yaml")
# Not about timing: generous bounds, so that a loaded host is slow rather than wrong.
CHECK_TIMEOUT_S = 10.0
PROVIDER_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Pki:
    """One test CA signs Keycloak's and Envoy's server certificates and bob's two client
    certificates; his token is bound to the laptop's."""

    ca: CertificateAuthority
    keycloak: Issued
    listener: Issued
    laptop: Issued
    phone: Issued


@dataclass(frozen=True)
class Caller:
    """A client of Envoy's TLS listener, presenting `certificate` when it has one."""

    ca_file: Path
    certificate: Issued | None

    def get(self, envoy: EnvoyProcess, path: str, token: str) -> Reply:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.certificate is not None:
            context.load_cert_chain(self.certificate.cert_file, self.certificate.key_file)
        url = f"https://127.0.0.1:{envoy.listen_port}{path}"
        request = urllib.request.Request(url, method="GET")
        request.add_header("Host", "app.example")
        request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback
                request, context=context, timeout=30
            ) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                return Reply(response.status, headers, response.read())
        except urllib.error.HTTPError as error:
            headers = {k.lower(): v for k, v in error.headers.items()}
            return Reply(error.code, headers, error.read())


def render_client_mtls_loopback_config(
    *,
    ext_authz_port: int,
    upstream_port: int,
    listener: Issued,
    client_ca_file: Path,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """envoy-client-mtls.yaml on loopback, serving `listener` and trusting `client_ca_file`."""
    config = render_loopback_config(
        ext_authz_port=ext_authz_port,
        upstream_port=upstream_port,
        timeout_s=timeout_s,
        source=ENVOY_CLIENT_MTLS_YAML,
    )
    common = _listener_tls_context(config)["common_tls_context"]
    common["tls_certificates"] = [
        {
            "certificate_chain": {"filename": str(listener.cert_file)},
            "private_key": {"filename": str(listener.key_file)},
        }
    ]
    common["validation_context"]["trusted_ca"] = {"filename": str(client_ca_file)}
    return config


def _listener_tls_context(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    typed_config: dict[str, Any] = chain["transport_socket"]["typed_config"]
    return typed_config


def _ext_authz_filter(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_authz,) = [f for f in manager["http_filters"] if f["name"] == EXT_AUTHZ_FILTER]
    typed_config: dict[str, Any] = ext_authz["typed_config"]
    return typed_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = CertificateAuthority(tmp_path_factory.mktemp("mtls-pki"))
    return Pki(
        ca=ca,
        keycloak=ca.server("keycloak"),
        listener=ca.server("app.example"),
        laptop=ca.client("bob-laptop"),
        phone=ca.client("bob-phone"),
    )


@pytest.fixture(scope="module")
def https_keycloak(request: pytest.FixtureRequest, pki: Pki) -> Iterator[HttpsKeycloak]:
    """Fails (never skips) when Keycloak cannot run, like the session Keycloak."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def progress(message: str) -> None:
        # Past pytest's output capture, so the long wait shows even without -s.
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"[keycloak https] {message}")

    problem: str | None = None
    try:
        keycloak = start_https_keycloak(
            default_cache_dir(os.environ), pki.keycloak, pki.ca.ca_file, progress
        )
    except KeycloakError as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"Keycloak in HTTPS mode could not be started: {problem}", pytrace=False)
    try:
        # A fresh JVM is slow to answer its first introspections; a deployed one is warm.
        token = keycloak.access_token("bob", PLAIN_APP_CLIENT_ID, None)
        for _ in range(20):
            keycloak.introspect(token)
        yield keycloak
    finally:
        keycloak.stop()


@pytest.fixture(scope="module")
def bound_token(https_keycloak: HttpsKeycloak, pki: Pki) -> str:
    return https_keycloak.access_token("bob", MTLS_APP_CLIENT_ID, pki.laptop)


@pytest.fixture(scope="module")
def plain_token(https_keycloak: HttpsKeycloak) -> str:
    return https_keycloak.access_token("bob", PLAIN_APP_CLIENT_ID, None)


@pytest.fixture(scope="module")
def envoy(
    https_keycloak: HttpsKeycloak,
    pki: Pki,
    echo_upstream: BackgroundEchoUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EnvoyProcess]:
    text = seed_config_text(
        https_keycloak.issuer,
        client_secret=MTLS_EXT_AUTHZ_SECRET,
        introspection_endpoint=https_keycloak.backchannel_introspection_endpoint,
        timeout_ms=PROVIDER_TIMEOUT_MS,
    )
    server = AuthzProcess.start(text, tmp_path_factory.mktemp("authz-mtls"))
    try:
        config = render_client_mtls_loopback_config(
            ext_authz_port=server.grpc_port,
            upstream_port=echo_upstream.port,
            listener=pki.listener,
            client_ca_file=pki.ca.ca_file,
            timeout_s=CHECK_TIMEOUT_S,
        )
        envoy = run_envoy(config, tmp_path_factory.mktemp("envoy-client-mtls"))
        try:
            yield envoy
        finally:
            envoy.stop()
    finally:
        server.stop()


def caller(pki: Pki, certificate: Issued | None) -> Caller:
    return Caller(pki.ca.ca_file, certificate)


def assert_invalid_token(reply: Reply) -> None:
    assert reply.status == 401, reply.body
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith("Bearer"), challenge
    assert 'error="invalid_token"' in challenge


# What Keycloak does (verified here rather than taken from its documentation).


@pytest.mark.keycloak
def test_keycloak_binds_the_token_to_the_certificate_of_the_token_request(
    https_keycloak: HttpsKeycloak, pki: Pki, bound_token: str
) -> None:
    claims = jwt.decode(bound_token, options={"verify_signature": False})
    introspected = https_keycloak.introspect(bound_token)

    binding = {"x5t#S256": pki.laptop.sha256_thumbprint}
    assert claims["cnf"] == binding
    # Still a bearer token by type: the binding is only in cnf.
    assert claims["typ"] == "Bearer"
    # Introspection copies cnf, so our server sees the binding there.
    assert introspected["active"] is True
    assert introspected["cnf"] == binding
    assert introspected["iss"] == https_keycloak.issuer


@pytest.mark.keycloak
def test_keycloak_issues_no_bound_token_without_a_client_certificate(
    https_keycloak: HttpsKeycloak,
) -> None:
    reply = https_keycloak.token_request("bob", MTLS_APP_CLIENT_ID, None)

    assert reply.status == 400
    assert reply.json()["error"] == "invalid_request"


# Through Envoy.


@pytest.mark.keycloak
def test_the_bound_token_with_its_certificate_reaches_the_upstream_as_bob(
    envoy: EnvoyProcess, pki: Pki, bound_token: str
) -> None:
    reply = caller(pki, pki.laptop).get(envoy, "/api/forms/1", bound_token)

    assert reply.status == 200, reply.body
    seen = reply.upstream_headers
    assert seen["x-auth-username"] == "bob"
    assert seen["x-auth-client"] == MTLS_APP_CLIENT_ID
    assert seen["x-auth-roles"] == "creator"


@pytest.mark.keycloak
def test_the_bound_token_from_another_certificate_of_the_same_ca_is_refused(
    envoy: EnvoyProcess, pki: Pki, bound_token: str
) -> None:
    laptop, phone = caller(pki, pki.laptop), caller(pki, pki.phone)
    # Allowed first, so the identity is cached: the certificate is still checked each time.
    assert laptop.get(envoy, "/api/forms/2", bound_token).status == 200

    assert_invalid_token(phone.get(envoy, "/api/forms/2", bound_token))
    assert laptop.get(envoy, "/api/forms/2", bound_token).status == 200


@pytest.mark.keycloak
def test_the_bound_token_without_a_client_certificate_is_refused(
    envoy: EnvoyProcess, pki: Pki, bound_token: str
) -> None:
    assert_invalid_token(caller(pki, None).get(envoy, "/api/forms/3", bound_token))


@pytest.mark.keycloak
@pytest.mark.parametrize("with_certificate", [False, True], ids=["no-certificate", "certificate"])
def test_an_unbound_token_passes_with_or_without_a_client_certificate(
    envoy: EnvoyProcess, pki: Pki, plain_token: str, with_certificate: bool
) -> None:
    holder = caller(pki, pki.laptop if with_certificate else None)

    reply = holder.get(envoy, "/api/forms/4", plain_token)

    assert reply.status == 200, reply.body
    assert reply.upstream_headers["x-auth-client"] == PLAIN_APP_CLIENT_ID


@pytest.mark.keycloak
def test_a_certificate_the_client_ca_did_not_sign_fails_the_handshake(
    envoy: EnvoyProcess, pki: Pki, bound_token: str, tmp_path: Path
) -> None:
    stranger = CertificateAuthority(tmp_path / "other-ca").client("bob-laptop")

    with pytest.raises(OSError) as refused:  # noqa: PT011 - narrowed below
        caller(pki, stranger).get(envoy, "/api/forms/5", bound_token)

    # Under TLS 1.3 the client is done with its handshake before Envoy checks the certificate,
    # so the refusal shows on the first write or read: an SSL error or a closed connection
    # (urllib wraps those raised while sending). Not a refused connection, not an answer.
    failure = refused.value
    if isinstance(failure, urllib.error.URLError) and isinstance(failure.reason, OSError):
        failure = failure.reason
    assert isinstance(failure, ssl.SSLError | ConnectionResetError), repr(failure)


# The configuration file.


def test_the_client_mtls_config_is_the_deployment_config_plus_client_tls() -> None:
    mtls_config = load_deployment_config(ENVOY_CLIENT_MTLS_YAML)
    context = _listener_tls_context(mtls_config)
    plain = copy.deepcopy(mtls_config)
    (listener,) = plain["static_resources"]["listeners"]
    del listener["filter_chains"][0]["transport_socket"]
    _ext_authz_filter(plain)["include_peer_certificate"] = False

    assert plain == load_deployment_config(ENVOY_YAML)
    assert _ext_authz_filter(mtls_config)["include_peer_certificate"] is True
    # Asked for and checked against the client CA, not required (see the file's header).
    assert context["require_client_certificate"] is False
    assert context["common_tls_context"]["validation_context"]["trusted_ca"]
    assert context["common_tls_context"]["tls_certificates"]


def test_the_loopback_variant_validates(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    config = render_client_mtls_loopback_config(
        ext_authz_port=9191,
        upstream_port=8000,
        listener=ca.server("app.example"),
        client_ca_file=ca.ca_file,
    )

    result = validate_config(write_config(config, tmp_path / "envoy.json"))

    assert result.returncode == 0, result.stdout + result.stderr
