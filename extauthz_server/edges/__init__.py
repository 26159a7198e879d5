"""Transports in: the gRPC Check and health services (CheckRequest to AuthRequest, Decision to
CheckResponse), the HTTP authorization listener for Envoy's http_service and forward-auth
proxies, and the HTTP app (health, readiness, metrics, JWKS, back-channel logout).
Imports every phase below it; never `config` or `app`.
"""
