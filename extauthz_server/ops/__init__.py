"""Operating the server: Prometheus metrics, JSON logs with one audit line per decision, and
OpenTelemetry tracing. Imports only `core` and `errors`.
"""
