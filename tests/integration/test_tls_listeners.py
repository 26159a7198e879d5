"""TLS on our own listeners (`server.tls`): the hop from the proxy carries every bearer token,
so outside a mesh it is encrypted, and with a client CA only holders of its certificates get
an answer. Our real server on port 0, asked over gRPC and over HTTP as the proxies ask."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import grpc
import pytest

from extauthz_server.edges import http_server
from extauthz_server.edges.http_server import HttpAnswer, HttpRequest, HttpServer
from tests.integration.conftest import RunningAuthz, StartAuthz
from tests.support.certificates import CertificateAuthority, Issued
from tests.support.check_requests import call_check, check_request, upstream_headers
from tests.support.keycloak_standin import KeycloakStandIn, active_document

BOB = "bob-token"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
def other_ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "other-ca", "another CA")


@pytest.fixture
def envoy_cert(ca: CertificateAuthority) -> Issued:
    return ca.client("envoy")


async def start_with_tls(
    start_authz: StartAuthz,
    standin: KeycloakStandIn,
    ca: CertificateAuthority,
    *,
    mutual: bool,
) -> RunningAuthz:
    standin.documents[BOB] = active_document("bob", ["manager"])
    served = ca.server()
    tls = {"cert_file": str(served.cert_file), "key_file": str(served.key_file)}
    if mutual:
        tls["client_ca_file"] = str(ca.ca_file)
    return await start_authz(server={"http_authz_listen": "127.0.0.1:0", "tls": tls})


@pytest.fixture
async def over_tls(
    start_authz: StartAuthz, standin: KeycloakStandIn, ca: CertificateAuthority
) -> RunningAuthz:
    return await start_with_tls(start_authz, standin, ca, mutual=False)


@pytest.fixture
async def over_mutual_tls(
    start_authz: StartAuthz, standin: KeycloakStandIn, ca: CertificateAuthority
) -> RunningAuthz:
    return await start_with_tls(start_authz, standin, ca, mutual=True)


def tls_channel(
    authz: RunningAuthz, ca: CertificateAuthority, client: Issued | None = None
) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.ca_pem,
        private_key=None if client is None else client.key_pem,
        certificate_chain=None if client is None else client.cert_pem,
    )
    # The address is checked against the certificate's names (127.0.0.1 is one of them).
    return grpc.aio.secure_channel(
        f"127.0.0.1:{authz.server.grpc_port}",
        credentials,
        options=[("grpc.use_local_subchannel_pool", 1)],
    )


async def bob_is_allowed_over(channel: grpc.aio.Channel) -> None:
    async with channel:
        response = await call_check(channel, check_request("/api/forms", token=BOB))
    assert response.status.code == 0
    assert upstream_headers(response)["x-auth-roles"] == "creator"


async def is_refused(channel: grpc.aio.Channel) -> bool:
    async with channel:
        try:
            await call_check(channel, check_request("/api/forms", token=BOB), timeout_s=10)
        except grpc.aio.AioRpcError as error:
            code: grpc.StatusCode = error.code()
            return code is grpc.StatusCode.UNAVAILABLE
    return False


def https_context(ca: CertificateAuthority, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.ca_file)
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    return context


async def ask_https(
    authz: RunningAuthz, context: ssl.SSLContext | None, scheme: str = "https"
) -> int:
    url = f"{scheme}://127.0.0.1:{authz.server.http_authz_port}/envoy/api/forms"
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers={"authorization": f"Bearer {BOB}"}) as response,
    ):
        return response.status


async def test_a_client_trusting_our_ca_gets_check_answers_over_tls(
    over_tls: RunningAuthz, ca: CertificateAuthority
) -> None:
    await bob_is_allowed_over(tls_channel(over_tls, ca))


async def test_a_plaintext_grpc_client_gets_no_answer(over_tls: RunningAuthz) -> None:
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{over_tls.server.grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )

    assert await is_refused(channel)


async def test_a_client_that_does_not_trust_our_ca_gets_no_answer(
    over_tls: RunningAuthz, other_ca: CertificateAuthority
) -> None:
    assert await is_refused(tls_channel(over_tls, other_ca))


async def test_with_a_client_ca_a_client_certificate_it_signed_is_answered(
    over_mutual_tls: RunningAuthz, ca: CertificateAuthority, envoy_cert: Issued
) -> None:
    await bob_is_allowed_over(tls_channel(over_mutual_tls, ca, envoy_cert))


async def test_with_a_client_ca_a_client_without_a_certificate_is_refused(
    over_mutual_tls: RunningAuthz, ca: CertificateAuthority
) -> None:
    assert await is_refused(tls_channel(over_mutual_tls, ca))


async def test_with_a_client_ca_a_certificate_from_another_ca_is_refused(
    over_mutual_tls: RunningAuthz, ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    stranger = other_ca.client("envoy")

    assert await is_refused(tls_channel(over_mutual_tls, ca, stranger))


async def test_the_http_authorization_listener_answers_over_tls(
    over_tls: RunningAuthz, ca: CertificateAuthority
) -> None:
    assert await ask_https(over_tls, https_context(ca)) == 200


async def test_the_http_authorization_listener_refuses_plaintext(over_tls: RunningAuthz) -> None:
    with pytest.raises(aiohttp.ClientError):
        await ask_https(over_tls, None, scheme="http")


async def test_the_http_authorization_listener_answers_a_client_certificate_of_the_ca(
    over_mutual_tls: RunningAuthz, ca: CertificateAuthority, envoy_cert: Issued
) -> None:
    assert await ask_https(over_mutual_tls, https_context(ca, envoy_cert)) == 200


@pytest.mark.parametrize("client", ["none", "another CA's"])
async def test_the_http_authorization_listener_refuses_other_clients_under_mutual_tls(
    over_mutual_tls: RunningAuthz,
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    client: str,
) -> None:
    certificate = None if client == "none" else other_ca.client("envoy")

    with pytest.raises(aiohttp.ClientError):
        await ask_https(over_mutual_tls, https_context(ca, certificate))


async def test_a_connection_that_never_completes_its_handshake_is_closed(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that connects and says nothing holds a socket no longer than a slow request.
    monkeypatch.setattr(http_server, "REQUEST_TIMEOUT_S", 0.2)
    served = ca.server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(served.cert_file, served.key_file)

    async def answer(_request: HttpRequest) -> HttpAnswer:
        return HttpAnswer(200)

    server = HttpServer(answer)
    port = await server.start("127.0.0.1", 0, tls=context)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await closed_by_server(reader)
    finally:
        writer.close()
        await server.stop(1.0)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(10):
            return await reader.read() == b""
    except ConnectionResetError:
        return True
