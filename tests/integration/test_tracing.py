"""Tracing: a Check span continues Envoy's trace, introspection is a child span, and Keycloak
receives the trace context."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from extauthz_server.ops.tracing import NoTracing, OpenTelemetryTracing, build_tracing
from tests.integration.conftest import StartAuthz
from tests.support.check_requests import call_check, check_request
from tests.support.keycloak_standin import KeycloakStandIn, active_document

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ENVOY_SPAN_ID = "00f067aa0ba902b7"


async def test_check_and_introspection_spans_join_the_trace_envoy_started(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    authz = await start_authz(tracing=OpenTelemetryTracing(provider))
    standin.documents["bob"] = active_document("bob", ["manager"])
    traceparent = f"00-{TRACE_ID}-{ENVOY_SPAN_ID}-01"

    await call_check(
        authz.channel,
        check_request("/api/forms", token="bob", headers={"traceparent": traceparent}),
    )

    spans = {span.name: span for span in exporter.get_finished_spans()}
    check = spans["envoy.service.auth.v3.Authorization/Check"]
    introspection = spans["token introspection"]
    assert check.kind is SpanKind.SERVER
    assert format(check.context.trace_id, "032x") == TRACE_ID
    assert check.parent is not None
    assert format(check.parent.span_id, "016x") == ENVOY_SPAN_ID
    assert check.attributes is not None
    assert check.attributes["extauthz.decision"] == "allow"
    assert check.attributes["extauthz.route"] == "forms"
    assert introspection.kind is SpanKind.CLIENT
    assert introspection.parent is not None
    assert introspection.parent.span_id == check.context.span_id
    [call] = standin.calls
    assert call.traceparent is not None
    assert call.traceparent.split("-")[1] == TRACE_ID
    assert call.traceparent.split("-")[2] == format(introspection.context.span_id, "016x")
    assert "bob" not in str(check.attributes)


async def test_tracing_off_sends_no_trace_context_to_the_provider(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz()
    standin.documents["bob"] = active_document("bob", ["manager"])

    await call_check(
        authz.channel,
        check_request(
            "/api/forms", token="bob", headers={"traceparent": f"00-{TRACE_ID}-{ENVOY_SPAN_ID}-01"}
        ),
    )

    assert standin.calls[0].traceparent is None


def test_configured_tracing_builds_an_otlp_pipeline_and_off_builds_nothing() -> None:
    off = build_tracing(False, "extauthz-server")
    on = build_tracing(True, "extauthz-server")
    try:
        assert isinstance(off, NoTracing)
        assert isinstance(on, OpenTelemetryTracing)
    finally:
        on.close()
