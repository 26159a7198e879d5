"""The gRPC edge: CheckRequest → AuthRequest, Decision → CheckResponse, and gRPC health."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping

import grpc

from extauthz_server._proto.envoy.config.core.v3 import base_pb2
from extauthz_server._proto.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from extauthz_server._proto.google.rpc import status_pb2
from extauthz_server._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from extauthz_server.core.decision import Decision, Header, Reason
from extauthz_server.core.request import AuthRequest
from extauthz_server.edges.checking import Checking, PreparedAnswers
from extauthz_server.ops.tracing import NoTracing, Tracing

log = logging.getLogger(__name__)

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
# Time kept back from Envoy's deadline to build and send the answer: a tenth of what is
# left, at least 10 ms and at most 100 ms. A fixed 10 ms was too little on a busy host,
# where one event-loop stall made the answer reach Envoy after its deadline.
RESPONSE_MARGIN_FRACTION = 0.1
MIN_RESPONSE_MARGIN_S = 0.01
MAX_RESPONSE_MARGIN_S = 0.1
MIN_BUDGET_S = 0.001

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# google.rpc.Code values (the gRPC status codes)
_GRPC_CODE = {200: 0, 400: 3, 401: 16, 403: 7, 503: 14}


def check_budget(deadline_remaining_s: float | None, provider_timeout_s: float) -> float:
    """Seconds a check may spend learning the identity, leaving room to answer in time."""
    if deadline_remaining_s is None:
        return provider_timeout_s
    margin = min(
        MAX_RESPONSE_MARGIN_S,
        max(MIN_RESPONSE_MARGIN_S, deadline_remaining_s * RESPONSE_MARGIN_FRACTION),
    )
    return max(MIN_BUDGET_S, min(provider_timeout_s, deadline_remaining_s - margin))


def to_auth_request(request: external_auth_pb2.CheckRequest) -> AuthRequest:
    attributes = request.attributes
    http = attributes.request.http
    return AuthRequest(
        method=http.method,
        host=http.host,
        path=http.path,
        headers=_headers(http),
        request_id=http.id,
        source_address=attributes.source.address.socket_address.address,
        scheme=http.scheme,
        # URL-encoded PEM, sent when the filter has `include_peer_certificate: true`.
        client_certificate=attributes.source.certificate,
    )


def _headers(http: attribute_context_pb2.AttributeContext.HttpRequest) -> Mapping[str, str]:
    if http.headers or not http.HasField("header_map"):
        # The protobuf map is read in place; nothing in the core writes to it.
        return http.headers
    # Envoy sends header_map instead of headers when `encode_raw_headers` is on.
    joined: dict[str, str] = {}
    for header in http.header_map.headers:
        value = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        name = header.key.lower()
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def _header_options(headers: tuple[Header, ...]) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
        )
        for name, value in headers
    ]


def to_check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    code = _GRPC_CODE.get(decision.status, 7 if decision.status < 500 else 14)
    response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code))
    # Envoy files this under the `envoy.filters.http.ext_authz` namespace for access logs.
    response.dynamic_metadata.update(decision.metadata)
    if decision.allowed:
        ok = response.ok_response
        ok.headers.extend(_header_options(decision.upstream_headers))
        ok.headers_to_remove.extend(decision.headers_to_remove)
        return response
    denied = response.denied_response
    denied.status.code = decision.status  # type: ignore[assignment]
    denied.headers.extend(_header_options(decision.response_headers))
    denied.body = decision.body
    return response


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, checking: Checking, tracing: Tracing) -> None:
        self._checking = checking
        self._tracing = tracing
        # Responses prepared for reused Decision objects (see Authorizer's allow memo).
        self._responses: PreparedAnswers[external_auth_pb2.CheckResponse] = PreparedAnswers(
            checking.authorizer
        )
        # With tracing off the Check path does not even enter a no-op context manager.
        self._traced = not isinstance(tracing, NoTracing)
        self._authorizer = checking.authorizer
        self._internal_error = to_check_response(checking.denials.deny(Reason.INTERNAL_ERROR))

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        started = time.perf_counter()
        try:
            auth_request = to_auth_request(request)
            if self._traced:
                decision = await self._traced_check(auth_request, context)
            else:
                decision = await self._authorizer.check(auth_request, self._budget(context))
            self._checking.record(auth_request, decision, started)
            return self._response_for(decision)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Last resort: whatever went wrong, the request is denied, never allowed.
            log.exception("check failed unexpectedly; denying")
            return self._internal_error

    def _response_for(self, decision: Decision) -> external_auth_pb2.CheckResponse:
        return self._responses.answer(decision, lambda: to_check_response(decision))

    async def _traced_check(
        self, request: AuthRequest, context: grpc.aio.ServicerContext
    ) -> Decision:
        with self._tracing.check_span(request.headers) as span:
            decision = await self._authorizer.check(request, self._budget(context))
            span.set_attribute("extauthz.decision", "allow" if decision.allowed else "deny")
            span.set_attribute("extauthz.reason", decision.reason.value)
            span.set_attribute("extauthz.route", decision.route or "")
            span.set_attribute("http.response.status_code", decision.status)
            return decision

    def _budget(self, context: grpc.aio.ServicerContext) -> float:
        return check_budget(context.time_remaining(), self._checking.provider_timeout_s)


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: SERVING for the server and the Authorization service until shutdown."""

    SERVICES = frozenset({"", AUTHORIZATION_SERVICE})

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    def _status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus:
        if service not in self.SERVICES:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if self._stopping.is_set():
            return health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse.SERVING

    def set_not_serving(self) -> None:
        self._stopping.set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self.SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=self._status(request.service))

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        yield health_pb2.HealthCheckResponse(status=self._status(request.service))
        if request.service in self.SERVICES and not self._stopping.is_set():
            await self._stopping.wait()
            yield health_pb2.HealthCheckResponse(status=self._status(request.service))


def add_services(
    server: grpc.aio.Server, authz: AuthorizationServicer, health: HealthServicer
) -> None:
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authz, server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health, server)  # type: ignore[no-untyped-call]
