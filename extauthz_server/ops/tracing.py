"""Optional OpenTelemetry tracing: a span per Check continuing the trace Envoy forwarded
(W3C `traceparent`), a child span per introspection call, and the trace context passed on
to Keycloak. When tracing is off nothing here runs but two no-op calls."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from extauthz_server.errors import ConfigError

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "extauthz_server"


class CheckSpan(Protocol):
    def set_attribute(self, key: str, value: str | int | bool) -> None: ...


class Tracing(Protocol):
    def check_span(
        self, headers: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[CheckSpan]:
        """A span for one Check, child of the trace named in the request's headers."""
        ...

    def client_span(
        self, name: str, headers: dict[str, str]
    ) -> contextlib.AbstractContextManager[CheckSpan]:
        """A span for an outgoing call; the trace context is written into `headers`."""
        ...

    def close(self) -> None:
        """Flush and stop exporting."""
        ...


class _NoSpan:
    def set_attribute(self, key: str, value: str | int | bool) -> None:
        return None


class NoTracing:
    _span = _NoSpan()

    @contextlib.contextmanager
    def check_span(self, headers: Mapping[str, str]) -> Iterator[CheckSpan]:
        yield self._span

    @contextlib.contextmanager
    def client_span(self, name: str, headers: dict[str, str]) -> Iterator[CheckSpan]:
        yield self._span

    def close(self) -> None:
        return None


class OpenTelemetryTracing:
    """Spans through the OpenTelemetry API, with the given (or the global) tracer provider."""

    def __init__(self, tracer_provider: Any = None, *, owns_provider: bool = False) -> None:
        self._provider = tracer_provider if owns_provider else None
        from opentelemetry import propagate, trace

        self._trace = trace
        self._propagate = propagate
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)

    @contextlib.contextmanager
    def check_span(self, headers: Mapping[str, str]) -> Iterator[CheckSpan]:
        parent = self._propagate.extract(headers)
        with self._tracer.start_as_current_span(
            "envoy.service.auth.v3.Authorization/Check",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
        ) as span:
            yield span

    @contextlib.contextmanager
    def client_span(self, name: str, headers: dict[str, str]) -> Iterator[CheckSpan]:
        with self._tracer.start_as_current_span(name, kind=self._trace.SpanKind.CLIENT) as span:
            self._propagate.inject(headers)
            yield span

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def build_tracing(enabled: bool, service_name: str) -> Tracing:
    """Tracing as configured: OTLP over HTTP to the endpoint in the standard OTEL_* variables."""
    if not enabled:
        return NoTracing()
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        raise ConfigError(
            "tracing.enabled", "needs the tracing extra: pip install 'extauthz-server[tracing]'"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing on: OTLP export as %s", service_name)
    return OpenTelemetryTracing(provider, owns_provider=True)
