"""Our protos/ speak Envoy's wire format.

envoy_data_plane is an independent (betterproto2) encoding of Envoy's v3 API, so bytes it
writes must parse with our generated classes, and bytes we write must parse with it.
"""

import datetime
import enum
import warnings
from collections.abc import Callable, Iterator

import betterproto2
import pytest
from google.protobuf import json_format, unknown_fields
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from extauthz_server._proto.envoy.config.core.v3 import address_pb2, base_pb2
from extauthz_server._proto.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from extauthz_server._proto.envoy.type.v3 import http_status_pb2
from extauthz_server._proto.google.rpc import status_pb2
from extauthz_server._proto.grpc.health.v1 import health_pb2_grpc

# envoy_data_plane 2.2.0's generated oneof validators use a pydantic idiom deprecated
# since pydantic 2.12; the warning fires once, when the classes are defined.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=r"Using `@model_validator` with mode='after' on a classmethod",
        category=DeprecationWarning,
    )
    from envoy_data_plane.envoy.config.core import v3 as edp_core
    from envoy_data_plane.envoy.service.auth import v3 as edp_auth
    from envoy_data_plane.envoy.type import v3 as edp_type
    from envoy_data_plane.google import protobuf as edp_protobuf
    from envoy_data_plane.google import rpc as edp_rpc
    from envoy_data_plane.message_pool import default_message_pool

UTC = datetime.UTC
AppendAction = base_pb2.HeaderValueOption.HeaderAppendAction
EdpAppendAction = edp_core.HeaderValueOptionHeaderAppendAction

JWT_METADATA = {
    "sub": "alice",
    "exp": 1767225600.0,
    "email_verified": True,
    "roles": ["reader", "writer"],
    "realm_access": {"roles": ["offline_access"], "azp": None},
}
TYPED_METADATA = edp_protobuf.Any(
    type_url="type.googleapis.com/google.protobuf.Struct",
    value=bytes(edp_protobuf.Struct.from_dict({"tenant": "acme"})),
)
REQUEST_TIME = datetime.datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)

ENVOY_CHECK_REQUEST = edp_auth.CheckRequest(
    attributes=edp_auth.AttributeContext(
        source=edp_auth.AttributeContextPeer(
            address=edp_core.Address(
                socket_address=edp_core.SocketAddress(address="10.1.2.3", port_value=51234)
            ),
            service="frontend",
            labels={"app": "web", "version": "v2"},
            principal="spiffe://cluster.local/ns/web/sa/frontend",
            certificate="-----BEGIN%20CERTIFICATE-----%0AMIIB",
        ),
        destination=edp_auth.AttributeContextPeer(
            address=edp_core.Address(
                socket_address=edp_core.SocketAddress(
                    protocol=edp_core.SocketAddressProtocol.TCP,
                    address="10.9.8.7",
                    port_value=8443,
                )
            ),
            principal="spiffe://cluster.local/ns/api/sa/orders",
        ),
        request=edp_auth.AttributeContextRequest(
            time=REQUEST_TIME,
            http=edp_auth.AttributeContextHttpRequest(
                id="2f0c4c7e-9b1d-4a57-8e0e-5d1f6b8a9c01",
                method="POST",
                headers={
                    ":authority": "api.example.test",
                    "authorization": "Bearer abc.def.ghi",
                    "x-forwarded-for": "192.0.2.1",
                },
                header_map=edp_core.HeaderMap(
                    headers=[
                        edp_core.HeaderValue(key="cookie", raw_value=b"a=1"),
                        edp_core.HeaderValue(key="cookie", raw_value=b"b=\xff"),
                    ]
                ),
                path="/orders/42?expand=items",
                host="api.example.test",
                scheme="https",
                query="expand=items",
                fragment="top",
                size=1234,
                protocol="HTTP/2",
                body='{"qty": 3}',
                raw_body=b"\x00\x01\xfe\xff",
            ),
        ),
        context_extensions={"route": "orders", "virtual_host": "api"},
        metadata_context=edp_core.Metadata(
            filter_metadata={
                "envoy.filters.http.jwt_authn": edp_protobuf.Struct.from_dict(JWT_METADATA)
            },
            typed_filter_metadata={"acme.tenant": TYPED_METADATA},
        ),
        route_metadata_context=edp_core.Metadata(
            filter_metadata={"extauthz": edp_protobuf.Struct.from_dict({"policy": "orders"})}
        ),
        tls_session=edp_auth.AttributeContextTlsSession(sni="api.example.test"),
    )
)


def _unknown_field_paths(message: Message, path: str = "") -> Iterator[str]:
    """Yield the path of every (sub)message that holds fields our schema does not know."""
    if len(unknown_fields.UnknownFieldSet(message)):
        yield path or "<root>"
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        message_type = field.message_type
        assert message_type is not None
        if message_type.GetOptions().map_entry:
            value_field = message_type.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    yield from _unknown_field_paths(item, f"{path}.{field.name}[{key!r}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _unknown_field_paths(item, f"{path}.{field.name}[{index}]")
        else:
            yield from _unknown_field_paths(value, f"{path}.{field.name}")


def test_envoy_check_request_parses_with_every_field_intact() -> None:
    request = external_auth_pb2.CheckRequest.FromString(bytes(ENVOY_CHECK_REQUEST))
    attributes = request.attributes

    assert list(_unknown_field_paths(request)) == []

    source = attributes.source
    assert source.address.WhichOneof("address") == "socket_address"
    assert source.address.socket_address.address == "10.1.2.3"
    assert source.address.socket_address.port_value == 51234
    assert source.service == "frontend"
    assert dict(source.labels) == {"app": "web", "version": "v2"}
    assert source.principal == "spiffe://cluster.local/ns/web/sa/frontend"
    assert source.certificate == "-----BEGIN%20CERTIFICATE-----%0AMIIB"

    destination = attributes.destination
    assert destination.address.socket_address.protocol == address_pb2.SocketAddress.TCP
    assert destination.address.socket_address.address == "10.9.8.7"
    assert destination.address.socket_address.port_value == 8443
    assert destination.principal == "spiffe://cluster.local/ns/api/sa/orders"

    assert attributes.request.time.ToDatetime(tzinfo=UTC) == REQUEST_TIME
    http = attributes.request.http
    assert http.id == "2f0c4c7e-9b1d-4a57-8e0e-5d1f6b8a9c01"
    assert http.method == "POST"
    assert dict(http.headers) == {
        ":authority": "api.example.test",
        "authorization": "Bearer abc.def.ghi",
        "x-forwarded-for": "192.0.2.1",
    }
    assert [(h.key, h.value, h.raw_value) for h in http.header_map.headers] == [
        ("cookie", "", b"a=1"),
        ("cookie", "", b"b=\xff"),
    ]
    assert http.path == "/orders/42?expand=items"
    assert http.host == "api.example.test"
    assert http.scheme == "https"
    assert http.query == "expand=items"
    assert http.fragment == "top"
    assert http.size == 1234
    assert http.protocol == "HTTP/2"
    assert http.body == '{"qty": 3}'
    assert http.raw_body == b"\x00\x01\xfe\xff"

    assert dict(attributes.context_extensions) == {"route": "orders", "virtual_host": "api"}
    metadata = attributes.metadata_context
    assert {
        name: json_format.MessageToDict(struct) for name, struct in metadata.filter_metadata.items()
    } == {"envoy.filters.http.jwt_authn": JWT_METADATA}
    typed = metadata.typed_filter_metadata["acme.tenant"]
    assert (typed.type_url, typed.value) == (TYPED_METADATA.type_url, TYPED_METADATA.value)
    assert json_format.MessageToDict(
        attributes.route_metadata_context.filter_metadata["extauthz"]
    ) == {"policy": "orders"}
    assert attributes.tls_session.sni == "api.example.test"


def test_check_request_survives_a_round_trip_through_our_classes() -> None:
    ours = external_auth_pb2.CheckRequest.FromString(bytes(ENVOY_CHECK_REQUEST))

    again = edp_auth.CheckRequest.parse(ours.SerializeToString())

    assert again.to_dict() == ENVOY_CHECK_REQUEST.to_dict()


def _header(
    key: str,
    value: str,
    action: base_pb2.HeaderValueOption.HeaderAppendAction,
    *,
    keep_empty: bool = False,
) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=action,
        keep_empty_value=keep_empty,
    )


def _edp_header(
    key: str, value: str, action: EdpAppendAction, *, keep_empty: bool = False
) -> edp_core.HeaderValueOption:
    return edp_core.HeaderValueOption(
        header=edp_core.HeaderValue(key=key, value=value),
        append_action=action,
        keep_empty_value=keep_empty,
    )


def _ok_response() -> external_auth_pb2.CheckResponse:
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[
                _header("x-user-id", "alice", AppendAction.OVERWRITE_IF_EXISTS_OR_ADD),
                _header("x-user-roles", "reader,writer", AppendAction.OVERWRITE_IF_EXISTS_OR_ADD),
                _header("x-tenant", "", AppendAction.ADD_IF_ABSENT, keep_empty=True),
            ],
            headers_to_remove=["authorization", "cookie"],
            response_headers_to_add=[
                _header("cache-control", "no-store", AppendAction.ADD_IF_ABSENT),
            ],
            query_parameters_to_set=[base_pb2.QueryParameter(key="tenant", value="acme")],
            query_parameters_to_remove=["access_token"],
        ),
    )
    json_format.ParseDict({"sub": "alice", "roles": ["reader"]}, response.dynamic_metadata)
    return response


def _edp_ok_response() -> edp_auth.CheckResponse:
    return edp_auth.CheckResponse(
        status=edp_rpc.Status(code=0),
        ok_response=edp_auth.OkHttpResponse(
            headers=[
                _edp_header("x-user-id", "alice", EdpAppendAction.OVERWRITE_IF_EXISTS_OR_ADD),
                _edp_header(
                    "x-user-roles", "reader,writer", EdpAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
                ),
                _edp_header("x-tenant", "", EdpAppendAction.ADD_IF_ABSENT, keep_empty=True),
            ],
            headers_to_remove=["authorization", "cookie"],
            response_headers_to_add=[
                _edp_header("cache-control", "no-store", EdpAppendAction.ADD_IF_ABSENT),
            ],
            query_parameters_to_set=[edp_core.QueryParameter(key="tenant", value="acme")],
            query_parameters_to_remove=["access_token"],
        ),
        dynamic_metadata=edp_protobuf.Struct.from_dict({"sub": "alice", "roles": ["reader"]}),
    )


def _denied(
    http_status: http_status_pb2.StatusCode,
    rpc_code: int,
    body: str,
    headers: dict[str, str],
) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=rpc_code, message=body),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status),
            headers=[
                _header(k, v, AppendAction.OVERWRITE_IF_EXISTS_OR_ADD) for k, v in headers.items()
            ],
            body=body,
        ),
    )


def _edp_denied(
    http_status: edp_type.StatusCode, rpc_code: int, body: str, headers: dict[str, str]
) -> edp_auth.CheckResponse:
    return edp_auth.CheckResponse(
        status=edp_rpc.Status(code=rpc_code, message=body),
        denied_response=edp_auth.DeniedHttpResponse(
            status=edp_type.HttpStatus(code=http_status),
            headers=[
                _edp_header(k, v, EdpAppendAction.OVERWRITE_IF_EXISTS_OR_ADD)
                for k, v in headers.items()
            ],
            body=body,
        ),
    )


UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE = 16, 7, 14
CHALLENGE = {"www-authenticate": 'Bearer realm="api", error="invalid_token"'}
JSON = {"content-type": "application/json"}

RESPONSE_CASES = [
    pytest.param(_ok_response, _edp_ok_response, id="ok-with-header-mutations-and-metadata"),
    pytest.param(
        lambda: _denied(
            http_status_pb2.Unauthorized,
            UNAUTHENTICATED,
            '{"error":"invalid_token"}',
            CHALLENGE | JSON,
        ),
        lambda: _edp_denied(
            edp_type.StatusCode.Unauthorized,
            UNAUTHENTICATED,
            '{"error":"invalid_token"}',
            CHALLENGE | JSON,
        ),
        id="denied-401",
    ),
    pytest.param(
        lambda: _denied(
            http_status_pb2.Forbidden, PERMISSION_DENIED, '{"error":"insufficient_scope"}', JSON
        ),
        lambda: _edp_denied(
            edp_type.StatusCode.Forbidden,
            PERMISSION_DENIED,
            '{"error":"insufficient_scope"}',
            JSON,
        ),
        id="denied-403",
    ),
    pytest.param(
        lambda: _denied(http_status_pb2.ServiceUnavailable, UNAVAILABLE, "", {"retry-after": "1"}),
        lambda: _edp_denied(
            edp_type.StatusCode.ServiceUnavailable, UNAVAILABLE, "", {"retry-after": "1"}
        ),
        id="denied-503",
    ),
]


@pytest.mark.parametrize(("ours", "expected"), RESPONSE_CASES)
def test_our_check_response_decodes_identically_in_envoy_data_plane(
    ours: Callable[[], external_auth_pb2.CheckResponse],
    expected: Callable[[], edp_auth.CheckResponse],
) -> None:
    decoded = edp_auth.CheckResponse.parse(ours().SerializeToString())

    assert decoded.to_dict() == expected().to_dict()
    assert decoded == expected()


AUTHORIZATION_CHECK = "/envoy.service.auth.v3.Authorization/Check"


class _RecordingChannel:
    """Stands in for a grpc channel; records the method paths a stub asks for."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def unary_unary(self, method: str, *args: object, **kwargs: object) -> None:
        self.methods.append(method)

    def unary_stream(self, method: str, *args: object, **kwargs: object) -> None:
        self.methods.append(method)


@pytest.mark.parametrize(
    ("make_stub", "expected"),
    [
        pytest.param(
            external_auth_pb2_grpc.AuthorizationStub,
            [AUTHORIZATION_CHECK],
            id="authorization",
        ),
        pytest.param(
            health_pb2_grpc.HealthStub,
            ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"],
            id="health",
        ),
    ],
)
def test_generated_stub_uses_the_standard_grpc_method_paths(
    make_stub: Callable[[_RecordingChannel], object], expected: list[str]
) -> None:
    channel = _RecordingChannel()

    make_stub(channel)

    assert channel.methods == expected


def test_envoy_data_plane_serves_authorization_at_the_same_method_path() -> None:
    assert list(edp_auth.AuthorizationBase().__mapping__()) == [AUTHORIZATION_CHECK]


def _messages(descriptor: Descriptor) -> Iterator[Descriptor]:
    yield descriptor
    for nested in descriptor.nested_types:
        if not nested.GetOptions().map_entry:
            yield from _messages(nested)


OUR_MESSAGES = [
    message
    for module in (
        address_pb2,
        base_pb2,
        attribute_context_pb2,
        external_auth_pb2,
        http_status_pb2,
        status_pb2,
    )
    for top in module.DESCRIPTOR.message_types_by_name.values()
    for message in _messages(top)
]
_SCALAR_TYPE_NAMES = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_MESSAGE: "message",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_UINT32: "uint32",
}


def _our_fields(message: Descriptor) -> dict[str, tuple[int, str, bool]]:
    fields = {}
    for field in message.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            fields[field.name] = (field.number, "map", False)
        else:
            repeated = field.is_repeated
            fields[field.name] = (field.number, _SCALAR_TYPE_NAMES[field.type], repeated)
    return fields


@pytest.mark.parametrize("message", OUR_MESSAGES, ids=lambda m: m.full_name)
def test_message_fields_match_envoy_names_numbers_and_types(message: Descriptor) -> None:
    envoy_cls = default_message_pool.url_to_type[f"type.googleapis.com/{message.full_name}"]
    envoy_meta: betterproto2.ProtoClassMetadata = envoy_cls._betterproto  # type: ignore[arg-type]

    envoy_fields = {
        name: (meta.number, meta.proto_type, meta.repeated)
        for name, meta in envoy_meta.meta_by_field_name.items()
    }

    assert _our_fields(message) == envoy_fields


@pytest.mark.parametrize(
    ("ours", "envoy_enum"),
    [
        pytest.param(
            base_pb2.HeaderValueOption.DESCRIPTOR.enum_types_by_name["HeaderAppendAction"],
            EdpAppendAction,
            id="HeaderAppendAction",
        ),
        pytest.param(
            http_status_pb2.DESCRIPTOR.enum_types_by_name["StatusCode"],
            edp_type.StatusCode,
            id="StatusCode",
        ),
        pytest.param(
            address_pb2.SocketAddress.DESCRIPTOR.enum_types_by_name["Protocol"],
            edp_core.SocketAddressProtocol,
            id="SocketAddress.Protocol",
        ),
    ],
)
def test_enum_values_match_envoy(ours: EnumDescriptor, envoy_enum: type[enum.Enum]) -> None:
    assert {v.name: v.number for v in ours.values} == {
        member.name: member.value for member in envoy_enum
    }
