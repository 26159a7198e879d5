"""TLS on our gRPC and HTTP authorization listeners, built from `server.tls`, and the rotation
of its files on SIGHUP: new connections get the new certificate (and client CA), connections
already open keep theirs, and files that do not check leave the ones in use in place."""

from __future__ import annotations

import logging
import ssl
import threading

import grpc

from extauthz_server.config.tls import TlsConfig, TlsFiles, read_tls_files
from extauthz_server.errors import ConfigError

log = logging.getLogger(__name__)


class ListenerTls:
    """The credentials of both listeners; raises ConfigError when the files do not check."""

    def __init__(self, config: TlsConfig) -> None:
        self._config = config
        files, context = self._read()
        self._files = files
        self._context = context
        # gRPC asks for a new certificate configuration on each handshake, from its own
        # threads: the one a reload leaves here is handed over once, under the lock.
        self._lock = threading.Lock()
        self._grpc_pending: grpc.ServerCertificateConfiguration | None = None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _grpc_configuration(self._files),
            self._next_grpc_configuration,
            require_client_authentication=self._config.mutual,
        )

    def http_context(self) -> ssl.SSLContext:
        """The context the HTTP listener starts with; each handshake moves to the newest."""
        return self._context

    def reload(self) -> bool:
        """Read the files again; on a problem, log it (naming the key) and keep the old ones."""
        try:
            files, context = self._read()
        except ConfigError as exc:
            log.error("TLS files not reloaded, the certificate in use stays: %s", exc)
            return False
        with self._lock:
            self._grpc_pending = _grpc_configuration(files)
        self._files = files
        self._context = context
        log.info(
            "TLS certificate reloaded",
            extra={
                "subject": files.subject,
                "serial": f"{files.serial:x}",
                "not_after": files.not_after.isoformat(),
            },
        )
        return True

    def _next_grpc_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        # None: keep the configuration in use (grpc builds a new SSL context for each one
        # returned, so it is returned once).
        with self._lock:
            pending, self._grpc_pending = self._grpc_pending, None
        return pending

    def _read(self) -> tuple[TlsFiles, ssl.SSLContext]:
        files = read_tls_files(self._config)
        return files, self._http_context_for(files)

    def _http_context_for(self, files: TlsFiles) -> ssl.SSLContext:
        config = self._config
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The listener speaks HTTP/1.1 only; a client offering h2 as well falls back to it.
        context.set_alpn_protocols(["http/1.1"])
        try:
            # Python reads a certificate chain from files only; the files were just checked.
            context.load_cert_chain(config.cert_file, config.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{config.config_key}.cert_file", f"{config.cert_file}: refused by OpenSSL ({exc})"
            ) from None
        if files.client_ca is not None:
            try:
                context.load_verify_locations(cadata=files.client_ca.decode("ascii", "replace"))
            except ssl.SSLError as exc:
                raise ConfigError(
                    f"{config.config_key}.client_ca_file",
                    f"{config.client_ca_file}: refused by OpenSSL ({exc})",
                ) from None
            context.verify_mode = ssl.CERT_REQUIRED
        # Called on every handshake, whether or not the client sent a server name: it moves
        # the connection to the newest context (certificate and client CA both), so a reload
        # reaches new connections while those already open keep the context they began with.
        context.sni_callback = self._use_newest
        return context

    def _use_newest(
        self, connection: ssl.SSLObject, _server_name: str | None, context: ssl.SSLContext
    ) -> None:
        newest = self._context
        if context is not newest:
            connection.context = newest


def _grpc_configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(files.private_key, files.cert_chain)], root_certificates=files.client_ca
    )
