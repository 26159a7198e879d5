"""`server.tls`: the certificate, private key and (for mutual TLS) client CA our gRPC and HTTP
authorization listeners serve with. The files are read and checked at load and again on every
reload, each problem a ConfigError naming the key."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from extauthz_server.config.reader import Section
from extauthz_server.errors import ConfigError

# A CA bundle may hold a few hundred certificates; anything larger is not one.
MAX_PEM_FILE_BYTES = 1024 * 1024

Clock = Callable[[], datetime.datetime]


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Where the PEM files are (resolved against the configuration file's folder);
    `config_key` is the section they were given in, for errors."""

    cert_file: Path
    key_file: Path
    # Set: mutual TLS, and a client must present a certificate this CA signed.
    client_ca_file: Path | None = None
    config_key: str = "server.tls"

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM bytes of one reading of the files, checked to belong together."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None
    # The served (first) certificate, for the logs.
    subject: str
    serial: int
    not_after: datetime.datetime


def parse_tls(section: Section, base_dir: Path, now: Clock = _utc_now) -> TlsConfig | None:
    """The `server.tls` section, its files read once to check them; None when it is absent."""
    if section.raw("tls") is None:
        return None
    tls = section.section("tls")
    config = TlsConfig(
        cert_file=base_dir / tls.string("cert_file"),
        key_file=base_dir / tls.string("key_file"),
        client_ca_file=None
        if (ca := tls.optional_string("client_ca_file")) is None
        else base_dir / ca,
        config_key=tls.path,
    )
    tls.finish()
    read_tls_files(config, now)
    return config


def read_tls_files(config: TlsConfig, now: Clock = _utc_now) -> TlsFiles:
    """Read and check the files: PEM certificates, an unencrypted PEM key that matches the
    first certificate, which is valid now."""
    cert_key, key_key, ca_key = (
        f"{config.config_key}.{name}" for name in ("cert_file", "key_file", "client_ca_file")
    )
    cert_chain = _read(config.cert_file, cert_key)
    certificates = _certificates(cert_chain, config.cert_file, cert_key)
    served = certificates[0]
    _check_validity(served, config.cert_file, cert_key, now())
    private_key = _read(config.key_file, key_key)
    _check_key_matches(private_key, served, config, key_key, cert_key)
    client_ca = None
    if config.client_ca_file is not None:
        client_ca = _read(config.client_ca_file, ca_key)
        _certificates(client_ca, config.client_ca_file, ca_key)
    return TlsFiles(
        cert_chain=cert_chain,
        private_key=private_key,
        client_ca=client_ca,
        subject=served.subject.rfc4514_string(),
        serial=served.serial_number,
        not_after=served.not_valid_after_utc,
    )


def _read(path: Path, key: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(key, f"file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_PEM_FILE_BYTES:
        raise ConfigError(key, f"{path}: larger than {MAX_PEM_FILE_BYTES} bytes")
    return data


def _certificates(data: bytes, path: Path, key: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(key, f"{path}: not a PEM certificate") from None


def _check_validity(
    certificate: x509.Certificate, path: Path, key: str, now: datetime.datetime
) -> None:
    # Served anyway, every handshake would fail: refuse it here, where the key is named.
    if now >= certificate.not_valid_after_utc:
        expired = certificate.not_valid_after_utc.isoformat()
        raise ConfigError(key, f"{path}: the certificate expired at {expired}")
    if now < certificate.not_valid_before_utc:
        starts = certificate.not_valid_before_utc.isoformat()
        raise ConfigError(key, f"{path}: the certificate is not valid before {starts}")


def _check_key_matches(
    data: bytes, certificate: x509.Certificate, config: TlsConfig, key: str, cert_key: str
) -> None:
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            key, f"{config.key_file}: encrypted private keys are not supported"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's message could quote key material: say only what was expected.
        raise ConfigError(key, f"{config.key_file}: not a PEM private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    served = certificate.public_key().public_bytes(*spki)
    if private_key.public_key().public_bytes(*spki) != served:
        raise ConfigError(key, f"does not match the certificate in {cert_key}")
