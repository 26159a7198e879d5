"""`server.tls`: the files are checked at load, and every problem names the key it is about."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from extauthz_server.config.model import parse_config
from extauthz_server.config.reader import Section
from extauthz_server.config.tls import TlsConfig, parse_tls, read_tls_files
from extauthz_server.errors import ConfigError
from tests.support.certificates import CertificateAuthority, Issued

PROVIDER = """\
provider:
  issuer: "http://127.0.0.1:8080/realms/demo"
  client_id: ext-authz
  client_secret: s3cret
"""


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_cert(ca: CertificateAuthority) -> Issued:
    return ca.server()


def with_tls(tls: Mapping[str, str]) -> str:
    return PROVIDER + yaml.safe_dump({"server": {"tls": tls}})


def config_error(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ or {})
    return info.value


def test_tls_is_off_unless_configured() -> None:
    assert parse_config(PROVIDER, {}).server.tls is None
    assert parse_config(PROVIDER + "server: {tls: null}\n", {}).server.tls is None


def test_certificate_and_key_give_tls_and_a_client_ca_gives_mutual_tls(
    ca: CertificateAuthority, server_cert: Issued
) -> None:
    files = {"cert_file": str(server_cert.cert_file), "key_file": str(server_cert.key_file)}

    tls = parse_config(with_tls(files), {}).server.tls
    mutual = parse_config(with_tls(files | {"client_ca_file": str(ca.ca_file)}), {}).server.tls

    assert tls == TlsConfig(server_cert.cert_file, server_cert.key_file)
    assert tls is not None
    assert not tls.mutual
    assert mutual is not None
    assert mutual.mutual
    assert mutual.client_ca_file == ca.ca_file


def test_relative_file_names_are_read_beside_the_configuration_file(
    ca: CertificateAuthority, server_cert: Issued
) -> None:
    text = with_tls(
        {"cert_file": server_cert.cert_file.name, "key_file": server_cert.key_file.name}
    )

    tls = parse_config(text, {}, ca.directory).server.tls

    assert tls is not None
    assert tls.cert_file == ca.directory / server_cert.cert_file.name


def test_environment_overrides_set_the_files(ca: CertificateAuthority, server_cert: Issued) -> None:
    environ = {
        "EXTAUTHZ__SERVER__TLS__CERT_FILE": str(server_cert.cert_file),
        "EXTAUTHZ__SERVER__TLS__KEY_FILE": str(server_cert.key_file),
        "EXTAUTHZ__SERVER__TLS__CLIENT_CA_FILE": str(ca.ca_file),
    }

    tls = parse_config(PROVIDER, environ).server.tls

    assert tls == TlsConfig(server_cert.cert_file, server_cert.key_file, ca.ca_file)


def test_an_environment_override_can_turn_tls_off(server_cert: Issued) -> None:
    text = with_tls({"cert_file": str(server_cert.cert_file), "key_file": "/nowhere.pem"})

    assert parse_config(text, {"EXTAUTHZ__SERVER__TLS": "null"}).server.tls is None


def _write(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


def _encrypted_key(directory: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    return _write(directory, "encrypted-key.pem", key)


@pytest.mark.parametrize(
    ("case", "key", "problem"),
    [
        ("no cert_file", "server.tls.cert_file", "is required"),
        ("no key_file", "server.tls.key_file", "is required"),
        ("missing cert_file", "server.tls.cert_file", "file not found"),
        ("missing key_file", "server.tls.key_file", "file not found"),
        ("missing client_ca_file", "server.tls.client_ca_file", "file not found"),
        ("cert_file not PEM", "server.tls.cert_file", "not a PEM certificate"),
        ("cert_file holds a key", "server.tls.cert_file", "not a PEM certificate"),
        ("key_file not PEM", "server.tls.key_file", "not a PEM private key"),
        ("key_file encrypted", "server.tls.key_file", "encrypted private keys"),
        ("key of another certificate", "server.tls.key_file", "does not match the certificate"),
        ("client_ca_file not PEM", "server.tls.client_ca_file", "not a PEM certificate"),
        ("unknown key", "server.tls.ca_file", "unknown key (did you mean 'cert_file'?)"),
        ("not a mapping", "server.tls", "expected a mapping"),
    ],
)
def test_a_problem_with_the_files_names_the_key(
    tmp_path: Path,
    ca: CertificateAuthority,
    server_cert: Issued,
    case: str,
    key: str,
    problem: str,
) -> None:
    good = {"cert_file": str(server_cert.cert_file), "key_file": str(server_cert.key_file)}
    garbage = _write(tmp_path, "garbage.pem", b"-----BEGIN NOTHING-----\nAAAA\n")
    missing = str(tmp_path / "missing.pem")
    tls: object = {
        "no cert_file": {"key_file": good["key_file"]},
        "no key_file": {"cert_file": good["cert_file"]},
        "missing cert_file": good | {"cert_file": missing},
        "missing key_file": good | {"key_file": missing},
        "missing client_ca_file": good | {"client_ca_file": missing},
        "cert_file not PEM": good | {"cert_file": garbage},
        "cert_file holds a key": good | {"cert_file": good["key_file"]},
        "key_file not PEM": good | {"key_file": garbage},
        "key_file encrypted": good | {"key_file": _encrypted_key(tmp_path)},
        "key of another certificate": good | {"key_file": str(ca.server().key_file)},
        "client_ca_file not PEM": good | {"client_ca_file": garbage},
        "unknown key": good | {"ca_file": str(ca.ca_file)},
        "not a mapping": [good["cert_file"]],
    }[case]

    error = config_error(PROVIDER + yaml.safe_dump({"server": {"tls": tls}}))

    assert error.key_path == key
    assert problem in error.problem


def test_an_error_never_shows_the_private_key(tmp_path: Path, server_cert: Issued) -> None:
    # A key given as the certificate: the message names the file, not what is in it.
    text = with_tls({"cert_file": str(server_cert.key_file), "key_file": str(server_cert.key_file)})

    error = config_error(text)

    assert b"PRIVATE KEY" not in str(error).encode()
    assert server_cert.key_pem.decode().splitlines()[1] not in str(error)


@pytest.mark.parametrize(
    ("days_from_now", "problem"),
    [(30, "the certificate expired at"), (-30, "the certificate is not valid before")],
    ids=["expired", "not yet valid"],
)
def test_a_certificate_outside_its_validity_is_refused(
    server_cert: Issued, days_from_now: int, problem: str
) -> None:
    # The clock, not the certificate, is moved: outside its validity every handshake fails.
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days_from_now)
    section = Section(
        {"tls": {"cert_file": str(server_cert.cert_file), "key_file": str(server_cert.key_file)}},
        "server",
    )

    with pytest.raises(ConfigError) as info:
        parse_tls(section, Path(), now=lambda: moment)

    assert info.value.key_path == "server.tls.cert_file"
    assert problem in info.value.problem


def test_the_files_read_are_described_for_the_logs_without_the_key(server_cert: Issued) -> None:
    files = read_tls_files(TlsConfig(server_cert.cert_file, server_cert.key_file))

    assert files.subject == "CN=extauthz"
    assert files.serial == server_cert.serial
    assert files.client_ca is None
    assert "PRIVATE" not in repr(files)
