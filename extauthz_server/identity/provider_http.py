"""Talking to the provider over HTTP: GET a JSON document (discovery, JWKS) with a bounded
read, and the words for what went wrong, whichever HTTP client met it. Every failure names
the URL it was about and a plain reason, with the usual cause where one is known."""

from __future__ import annotations

import json
import socket
import ssl
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from extauthz_server.errors import ProviderUnavailable

_STATUS_HINTS = {
    400: "the request was refused",
    401: "our client credentials were refused (provider.client_id, client_secret, auth_method)",
    403: "our client credentials were refused (provider.client_id, client_secret, auth_method)",
    404: "not found (is the issuer right, realm included?)",
}

TLS_FAILED = "TLS failed (is the certificate trusted, the scheme right?)"
SERVER_CLOSED = "the server closed the connection"
NOT_RESOLVED = "the host name does not resolve (DNS)"
REFUSED = "connection refused (is anything listening at that address?)"
TIMED_OUT = "timed out"


async def fetch_json(
    session: aiohttp.ClientSession, url: str, *, what: str, max_bytes: int
) -> object:
    where = f"{what} {shown_url(url)}"
    try:
        async with session.get(url, headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise ProviderUnavailable(f"{where}: {status_reason(response.status)}")
            body = await read_bounded(response, max_bytes)
    except aiohttp.ClientError as exc:
        raise ProviderUnavailable(f"{where}: {failure_reason(exc)}") from exc
    if len(body) > max_bytes:
        raise ProviderUnavailable(f"{where}: larger than {max_bytes} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProviderUnavailable(f"{where}: not JSON") from exc


async def read_bounded(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, or its first `max_bytes + 1` bytes when it is longer (so the caller can
    tell). One `content.read(n)` is not enough: it returns what has arrived so far, and an
    answer sent in several chunks would be cut short."""
    parts: list[bytes] = []
    received = 0
    while received <= max_bytes:
        part = await response.content.read(max_bytes + 1 - received)
        if not part:
            break
        parts.append(part)
        received += len(part)
    return b"".join(parts)


def shown_url(url: str) -> str:
    """The URL without credentials or query, fit for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def status_reason(status: int) -> str:
    hint = _STATUS_HINTS.get(status)
    if hint is None and status >= 500:
        hint = "the provider failed"
    return f"answered {status}" + (f": {hint}" if hint else "")


def failure_reason(exc: BaseException) -> str:
    """What a failed aiohttp request means, in words (not a Python class name)."""
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return TLS_FAILED
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return SERVER_CLOSED
    if isinstance(exc, aiohttp.ClientConnectorError):
        return connect_failure_reason(exc.os_error)
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return TIMED_OUT
    return f"request failed ({type(exc).__name__})"


def connect_failure_reason(exc: OSError) -> str:
    """What a failed connection attempt means, in words."""
    if isinstance(exc, ssl.SSLError):
        return TLS_FAILED
    if isinstance(exc, socket.gaierror):
        return NOT_RESOLVED
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    return f"cannot connect ({exc.strerror or type(exc).__name__})"
