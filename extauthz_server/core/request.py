"""AuthRequest: the parts of an HTTP request that authorization looks at, protocol-free."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuthRequest:
    method: str
    host: str
    path: str
    headers: Mapping[str, str]
    request_id: str = ""
    source_address: str = ""
    # The scheme the client used ("https"), as the proxy saw it: part of a DPoP proof's htu.
    scheme: str = ""
    # The client certificate the proxy saw, in the form it sent it (see core.certificates);
    # empty when there was none.
    client_certificate: str = ""

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


def host_without_port(host: str) -> str:
    """Lower-cased host with any port and any trailing dot (`admin.example.` is the same
    name, fully qualified) removed; IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, colon, port = host.rpartition(":")
    if colon and name and (port.isdigit() or not port):
        host = name
    return host.rstrip(".") or host
