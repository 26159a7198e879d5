"""The HTTP edge: the same decision for proxies that ask over plain HTTP/1.1.

- `/envoy/<original path>`: Envoy's ext_authz `http_service` with `path_prefix: /envoy`. The
  request's method, the path after the prefix (query included) and `Host` are the original's.
- `/forward-auth`: nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`. The
  original method, host and URI come from `X-Forwarded-Method`, `X-Forwarded-Host` and
  `X-Forwarded-Uri`, or `X-Original-Method` and `X-Original-URI` (the usual nginx set-up).

The scheme the client used (part of a DPoP proof's `htu`) is `X-Forwarded-Proto`, which
every proxy config here sets; the client certificate the proxy saw (for certificate-bound
tokens) is in the header `mtls.certificate_header` names.

An allow is 200 carrying the identity headers for the proxy to copy to the upstream (and, for
Envoy, `x-envoy-auth-headers-to-remove` naming the client copies to drop); a deny is the
gRPC edge's status, headers and JSON body. The listener trusts what it is sent: only the
proxy may reach it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping

from extauthz_server.core.decision import Decision, Reason
from extauthz_server.core.request import AuthRequest
from extauthz_server.edges.checking import Checking, PreparedAnswers
from extauthz_server.edges.http_server import HttpAnswer, HttpRequest

log = logging.getLogger(__name__)

ENVOY_PREFIX = "/envoy"
FORWARD_AUTH_PATH = "/forward-auth"
# Envoy's HTTP mode has no headers_to_remove field: the service names them in this header.
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
# Where a forward-auth request names the original, as (Traefik's and Caddy's header, the
# usual nginx set-up's).
ORIGINAL_METHOD = ("x-forwarded-method", "x-original-method")
ORIGINAL_URI = ("x-forwarded-uri", "x-original-uri")
ORIGINAL_HOST = "x-forwarded-host"
# Every header a forward-auth decision reads the original from, for its repeat key.
FORWARDED_ORIGINAL = (*ORIGINAL_METHOD, *ORIGINAL_URI, ORIGINAL_HOST)


class NotAnAuthzPath(Exception):
    """The request is for neither `/envoy/…` nor `/forward-auth`."""


class MissingOriginal(Exception):
    """A forward-auth request that does not say which request it is about, or says two
    different things."""


def to_auth_request(
    method: str,
    raw_path: str,
    fields: Mapping[str, str],
    peer: str,
    certificate_header: str | None = None,
) -> AuthRequest:
    """The original request the proxy asks about, from its authorization request (header
    names lower-cased, repeated ones joined with commas). Raises NotAnAuthzPath,
    MissingOriginal."""
    if _under(raw_path, ENVOY_PREFIX):
        original = raw_path[len(ENVOY_PREFIX) :]
        if not original.startswith("/"):
            original = "/" + original
        return _request(method, fields.get("host", ""), original, fields, peer, certificate_header)
    if _under(raw_path, FORWARD_AUTH_PATH, allow_subpath=False):
        original_method = _one_of(fields, *ORIGINAL_METHOD)
        uri = _one_of(fields, *ORIGINAL_URI)
        if not original_method or not uri or not uri.startswith("/"):
            raise MissingOriginal
        host = fields.get(ORIGINAL_HOST) or fields.get("host", "")
        return _request(original_method.upper(), host, uri, fields, peer, certificate_header)
    raise NotAnAuthzPath


def _one_of(fields: Mapping[str, str], forwarded: str, original: str) -> str | None:
    """The value of whichever of the two is present. Both, disagreeing, is MissingOriginal:
    proxies pass the client's own headers on to us, so one of the two may be the client's
    (a client-sent X-Forwarded-Uri through an nginx that sets only X-Original-URI, or the
    reverse through Traefik or Caddy), and neither can be trusted."""
    first, second = fields.get(forwarded), fields.get(original)
    if first is not None and second is not None and first != second:
        raise MissingOriginal
    return first if first is not None else second


def _under(raw_path: str, prefix: str, *, allow_subpath: bool = True) -> bool:
    if not raw_path.startswith(prefix):
        return False
    end = len(prefix)
    if len(raw_path) == end:
        return True
    after = raw_path[end]
    return after == "?" or (allow_subpath and after == "/")


def _request(
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    peer: str,
    certificate_header: str | None,
) -> AuthRequest:
    return AuthRequest(
        method=method,
        host=host,
        path=path,
        headers=headers,
        request_id=headers.get("x-request-id", ""),
        source_address=_client_address(headers, peer),
        # A proxy chain appends: the last hop's word is its own.
        scheme=headers.get("x-forwarded-proto", "").rsplit(",", 1)[-1].strip().lower(),
        client_certificate=headers.get(certificate_header, "") if certificate_header else "",
    )


def _client_address(headers: Mapping[str, str], peer: str) -> str:
    """The address the proxy saw the client at: the last X-Forwarded-For hop, which the proxy
    itself appended, or else the proxy's own address."""
    forwarded = headers.get("x-forwarded-for", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last or peer


def repeat_key(request: HttpRequest, authorization: str, envoy: bool) -> bytes:
    """The SHA-256 of every input the decision on a request reads, for `Authorizer.repeat`:
    the Authorization value, the method, the target, `Host`, and for forward-auth the
    headers naming the original. A digest, so that no token is kept and a key is 32 bytes
    however long the request. Joined with line feeds, an absent header as a NUL: the parser
    admits neither in a target or a header value, so no two requests share the text."""
    headers = request.headers
    text = "\n".join((authorization, request.method, request.target, headers.get("host", "\0")))
    if not envoy:
        text += "".join(["\n" + headers.get(name, "\0") for name in FORWARDED_ORIGINAL])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def response_headers(decision: Decision, *, envoy: bool) -> list[tuple[str, str]]:
    """The answer's headers: an allow's identity headers, a deny's challenge and type.

    Every identity header is in an allow, so a proxy copying them overwrites the client's
    copies. Envoy is told which to remove; the forward-auth proxies get them empty (nginx
    then sends none; Caddy 2.6 would otherwise pass its own unexpanded placeholder on)."""
    if not decision.allowed:
        return list(decision.response_headers)
    headers = list(decision.upstream_headers)
    if not decision.headers_to_remove:
        return headers
    if envoy:
        headers.append((HEADERS_TO_REMOVE, ", ".join(decision.headers_to_remove)))
    else:
        headers.extend((name, "") for name in decision.headers_to_remove)
    return headers


class HttpAuthzService:
    """Answers the proxies' HTTP authorization requests with the Authorizer the gRPC edge
    uses; served by `http_server.HttpServer`."""

    def __init__(self, checking: Checking, certificate_header: str | None = None) -> None:
        self._checking = checking
        self._certificate_header = certificate_header
        self._answers: PreparedAnswers[HttpAnswer] = PreparedAnswers(checking.authorizer)

    async def handle(self, request: HttpRequest) -> HttpAnswer:
        started = time.perf_counter()
        checking = self._checking
        raw_path = request.target
        envoy = _under(raw_path, ENVOY_PREFIX)
        try:
            key = None
            authorization = request.headers.get("authorization")
            if authorization is not None and (
                envoy or _under(raw_path, FORWARD_AUTH_PATH, allow_subpath=False)
            ):
                key = repeat_key(request, authorization, envoy)
                repeated = checking.authorizer.repeat(key)
                if repeated is not None:
                    checking.record_repeat(repeated, started, self._auth_request, request)
                    answer = self._answers.kept(repeated, envoy)
                    return answer if answer is not None else self._answer_for(repeated, envoy)
            try:
                auth_request = self._auth_request(request)
            except NotAnAuthzPath:
                return _NOT_AN_AUTHZ_PATH
            except MissingOriginal:
                host = request.headers.get("host", "")
                auth_request = AuthRequest(request.method, host, raw_path, {})
                decision = checking.denials.deny(Reason.BAD_REQUEST)
            else:
                # The proxy sets no deadline over HTTP: the providers' own timeout bounds it.
                decision = await checking.authorizer.check(
                    auth_request, checking.provider_timeout_s, key
                )
            checking.record(auth_request, decision, started)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Last resort: whatever went wrong, the request is denied, never allowed.
            log.exception("check failed unexpectedly; denying")
            decision = checking.denials.deny(Reason.INTERNAL_ERROR)
        return self._answer_for(decision, envoy)

    def _auth_request(self, request: HttpRequest) -> AuthRequest:
        return to_auth_request(
            request.method, request.target, request.headers, request.peer, self._certificate_header
        )

    def _answer_for(self, decision: Decision, envoy: bool) -> HttpAnswer:
        return self._answers.answer(
            decision,
            lambda: HttpAnswer(
                decision.status,
                tuple(response_headers(decision, envoy=envoy)),
                decision.body.encode(),
            ),
            form=envoy,
        )


_NOT_AN_AUTHZ_PATH = HttpAnswer(
    404,
    (("content-type", "application/json"),),
    json.dumps(
        {
            "error": "not_found",
            "error_description": f"ask {ENVOY_PREFIX}/<original path> or {FORWARD_AUTH_PATH}",
        }
    ).encode(),
)
