"""Rotating the certificate (`server.tls`) with SIGHUP, on the installed command as an operator
runs it: new connections get the new certificate, connections already open keep working, and
files that do not check leave the certificate in use served, with an error naming the key."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.support.authz_process import AuthzProcess
from tests.support.certificates import CertificateAuthority, Issued, served_serial
from tests.support.check_requests import call_check, check_request
from tests.support.configs import seed_config_text
from tests.support.net import free_port

# Generous: a loaded 2-core host may take a while to start a worker or act on a signal.
LOG_WAIT_S = 30.0


@dataclass
class Rotation:
    ca: CertificateAuthority
    # The files the server is configured with; a rotation writes new contents over them.
    served: Issued
    envoy: Issued
    server: AuthzProcess

    def install(self, replacement: Issued) -> None:
        self.served.cert_file.write_bytes(replacement.cert_pem)
        self.served.key_file.write_bytes(replacement.key_pem)

    def hang_up(self) -> None:
        self.server.process.send_signal(signal.SIGHUP)

    def channel(self, trusting: CertificateAuthority) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            trusting.ca_pem, self.envoy.key_pem, self.envoy.cert_pem
        )
        return grpc.aio.secure_channel(
            f"127.0.0.1:{self.server.grpc_port}",
            credentials,
            options=[("grpc.use_local_subchannel_pool", 1)],
        )

    def https(self, trusting: CertificateAuthority) -> http.client.HTTPSConnection:
        context = trusting_context(trusting, self.envoy)
        return http.client.HTTPSConnection(
            "127.0.0.1", self.server.http_authz_port, context=context, timeout=10
        )


def trusting_context(ca: CertificateAuthority, client: Issued) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.ca_file)
    context.load_cert_chain(client.cert_file, client.key_file)
    return context


def tls_config_text(rotation_files: Issued, ca: CertificateAuthority, **server: object) -> str:
    dead_issuer = f"http://127.0.0.1:{free_port()}/realms/demo"
    tls = {
        "cert_file": str(rotation_files.cert_file),
        "key_file": str(rotation_files.key_file),
        "client_ca_file": str(ca.ca_file),
    }
    return seed_config_text(dead_issuer, server={"tls": tls, **server})


@pytest.fixture
def rotation(tmp_path: Path) -> Iterator[Rotation]:
    ca = CertificateAuthority(tmp_path / "ca")
    served = ca.server()
    text = tls_config_text(served, ca, http_authz_listen="127.0.0.1:0")
    server = AuthzProcess.start(text, tmp_path)
    yield Rotation(ca, served, ca.client("envoy"), server)
    assert server.stop() == 0


def messages(server: AuthzProcess, text: str) -> list[str]:
    found = []
    for line in server.log_lines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and text in str(entry.get("message")):
            found.append(str(entry["message"]))
    return found


def wait_for_messages(server: AuthzProcess, text: str, count: int = 1) -> list[str]:
    deadline = time.monotonic() + LOG_WAIT_S
    while len(found := messages(server, text)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} log lines with {text!r}"
        time.sleep(0.05)
    return found


async def public_check_passes(channel: grpc.aio.Channel) -> bool:
    # A public route: answered without asking the (absent) identity provider.
    response = await call_check(channel, check_request("/public/page"), timeout_s=10)
    return response.HasField("ok_response")


def public_page_status(connection: http.client.HTTPSConnection) -> int:
    connection.request("GET", "/envoy/public/page")
    response = connection.getresponse()
    response.read()
    return response.status


async def test_sighup_serves_the_new_certificate_to_new_connections_and_keeps_open_ones(
    rotation: Rotation, tmp_path: Path
) -> None:
    open_channel = rotation.channel(trusting=rotation.ca)
    open_https = rotation.https(trusting=rotation.ca)
    assert await public_check_passes(open_channel)
    assert public_page_status(open_https) == 200
    https_socket = open_https.sock
    # From a CA the open connections do not trust: were one of them made again, it would fail.
    new_ca = CertificateAuthority(tmp_path / "new-ca", "the new CA")
    renewed = new_ca.server()

    rotation.install(renewed)
    rotation.hang_up()
    wait_for_messages(rotation.server, "TLS certificate reloaded")

    assert served_serial(rotation.server.grpc_port, rotation.envoy) == renewed.serial
    assert (
        served_serial(rotation.server.http_authz_port, rotation.envoy, alpn="http/1.1")
        == renewed.serial
    )
    assert await public_check_passes(open_channel)
    assert public_page_status(open_https) == 200
    assert open_https.sock is https_socket
    async with rotation.channel(trusting=new_ca) as new_channel:
        assert await public_check_passes(new_channel)
    await open_channel.close()
    open_https.close()


@pytest.mark.parametrize(
    ("breakage", "key"),
    [("garbage certificate", "server.tls.cert_file"), ("another key", "server.tls.key_file")],
)
async def test_sighup_with_files_that_do_not_check_keeps_the_certificate_in_use(
    rotation: Rotation, breakage: str, key: str
) -> None:
    if breakage == "garbage certificate":
        rotation.served.cert_file.write_bytes(b"not a certificate\n")
    else:
        rotation.served.key_file.write_bytes(rotation.ca.server().key_pem)
    kept = rotation.served.serial

    rotation.hang_up()
    (error,) = wait_for_messages(rotation.server, "TLS files not reloaded")

    assert key in error
    assert served_serial(rotation.server.grpc_port, rotation.envoy) == kept
    async with rotation.channel(trusting=rotation.ca) as channel:
        assert await public_check_passes(channel)


def test_every_worker_serves_the_new_certificate_after_sighup(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    served, envoy = ca.server(), ca.client("envoy")
    grpc_port = free_port()
    text = tls_config_text(
        served,
        ca,
        grpc_listen=f"127.0.0.1:{grpc_port}",
        http_listen=f"127.0.0.1:{free_port()}",
        workers=2,
    )
    pool = AuthzProcess.start(text, tmp_path)
    try:
        wait_for_messages(pool, "serving", count=2)
        renewed = ca.server()
        Rotation(ca, served, envoy, pool).install(renewed)

        pool.process.send_signal(signal.SIGHUP)
        wait_for_messages(pool, "TLS certificate reloaded", count=2)

        # Each new connection goes to either worker (SO_REUSEPORT); all see the new one.
        serials = {served_serial(grpc_port, envoy) for _ in range(20)}
        assert serials == {renewed.serial}
    finally:
        assert pool.stop() == 0
