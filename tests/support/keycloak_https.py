"""A real Keycloak serving HTTPS that asks for client certificates, with the mtls realm
(keycloak/mtls-realm.json): the token endpoint binds mtls-app's tokens to the certificate the
client presented (RFC 8705 §3).

Keycloak's frontend URL is fixed to its HTTPS address, so every token names the HTTPS issuer
whichever port it was asked on; the plain HTTP port stays open for the back channel (our
server introspects there, on loopback), the way a deployment keeps introspection on its
private network.
"""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.certificates import Issued
from tests.support.keycloak import (
    EXT_AUTHZ_CLIENT_ID,
    USER_PASSWORDS,
    HttpReply,
    Keycloak,
    KeycloakError,
    KeycloakSettings,
    Progress,
    print_nothing,
)
from tests.support.net import free_port

MTLS_REALM = "mtls"
MTLS_REALM_FILE = Path(__file__).resolve().parents[2] / "keycloak" / "mtls-realm.json"
# Its access tokens carry cnf.x5t#S256 (tls.client.certificate.bound.access.tokens).
MTLS_APP_CLIENT_ID = "mtls-app"
# The same realm's ordinary public client: unbound bearer tokens.
PLAIN_APP_CLIENT_ID = "plain-app"
MTLS_EXT_AUTHZ_SECRET = "mtlsextauthzsecret0123456789abcd"

_HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class HttpsKeycloak:
    """The running Keycloak, its HTTPS port and the CA that signs what it trusts and serves."""

    keycloak: Keycloak
    https_port: int
    ca_file: Path

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.https_port}/realms/{MTLS_REALM}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def backchannel_introspection_endpoint(self) -> str:
        """Introspection on the plain HTTP port."""
        return f"{self.keycloak.token_endpoint_of(MTLS_REALM)}/introspect"

    def token_request(self, username: str, client_id: str, certificate: Issued | None) -> HttpReply:
        """A password grant over TLS, presenting `certificate` when one is given."""
        form = {
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": USER_PASSWORDS[username],
        }
        context = ssl.create_default_context(cafile=self.ca_file)
        if certificate is not None:
            context.load_cert_chain(certificate.cert_file, certificate.key_file)
        return _post(self.token_endpoint, form, context=context)

    def access_token(self, username: str, client_id: str, certificate: Issued | None) -> str:
        reply = self.token_request(username, client_id, certificate)
        if reply.status != 200:
            raise KeycloakError(f"token request failed with {reply.status}: {reply.body[:500]!r}")
        return str(reply.json()["access_token"])

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection as our server makes it: ext-authz's credentials, over the
        back channel."""
        form = {"token": token, "token_type_hint": "access_token"}
        credentials = f"{EXT_AUTHZ_CLIENT_ID}:{MTLS_EXT_AUTHZ_SECRET}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode()
        reply = _post(self.backchannel_introspection_endpoint, form, authorization=authorization)
        if reply.status != 200:
            raise KeycloakError(f"introspection failed with {reply.status}: {reply.body[:500]!r}")
        return reply.json()

    def stop(self) -> None:
        self.keycloak.stop()


def start_https_keycloak(
    cache_dir: Path, served: Issued, ca_file: Path, progress: Progress = print_nothing
) -> HttpsKeycloak:
    """Keycloak with `served` as its HTTPS certificate, asking clients for a certificate and
    trusting those `ca_file` signed (one it does not trust fails the handshake)."""
    https_port = free_port()
    settings = KeycloakSettings(
        cache_dir=cache_dir,
        realm_file=MTLS_REALM_FILE,
        extra_realm_files=(),
        ready_realm=MTLS_REALM,
        prepared_variant="client-auth",
        extra_options=(
            f"--https-port={https_port}",
            f"--https-certificate-file={served.cert_file}",
            f"--https-certificate-key-file={served.key_file}",
            # Ask, not require: plain-app's clients come without one. A certificate Keycloak
            # does not trust still fails the handshake.
            "--https-client-auth=request",
            f"--truststore-paths={ca_file}",
            # The management interface would otherwise inherit HTTPS, and client auth with it.
            "--http-management-scheme=http",
            # Without it a token asked for over HTTPS names the HTTPS issuer, and introspection
            # on the HTTP port, whose issuer differs, answers `active: false`.
            f"--hostname=https://127.0.0.1:{https_port}",
        ),
    )
    keycloak = Keycloak.start(settings, progress)
    return HttpsKeycloak(keycloak=keycloak, https_port=https_port, ca_file=ca_file)


def _post(
    url: str,
    form: dict[str, str],
    *,
    context: ssl.SSLContext | None = None,
    authorization: str | None = None,
) -> HttpReply:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(  # noqa: S310 - loopback
            request, context=context, timeout=_HTTP_TIMEOUT_S
        ) as response:
            return HttpReply(status=response.status, body=response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpReply(status=exc.code, body=exc.read())
