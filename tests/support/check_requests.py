"""CheckRequests as Envoy sends them, and a typed way to call the Check RPC."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from extauthz_server._proto.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
)

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"


def check_request(
    path: str,
    *,
    method: str = "GET",
    host: str = "app.example",
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
) -> external_auth_pb2.CheckRequest:
    all_headers = {":authority": host, ":method": method, ":path": path, **(headers or {})}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="req-1",
        method=method,
        host=host,
        path=path,
        scheme="http",
        protocol="HTTP/1.1",
        headers=all_headers,
    )
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.CopyFrom(http)
    return request


async def call_check(
    channel: grpc.aio.Channel, request: external_auth_pb2.CheckRequest, timeout_s: float = 5.0
) -> external_auth_pb2.CheckResponse:
    rpc = channel.unary_unary(
        CHECK_METHOD,
        request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )
    response: external_auth_pb2.CheckResponse = await rpc(request, timeout=timeout_s)
    return response


def upstream_headers(response: external_auth_pb2.CheckResponse) -> dict[str, str]:
    return {option.header.key: option.header.value for option in response.ok_response.headers}


def denied_headers(response: external_auth_pb2.CheckResponse) -> dict[str, str]:
    return {option.header.key: option.header.value for option in response.denied_response.headers}
