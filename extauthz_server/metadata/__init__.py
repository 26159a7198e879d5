"""What else we learn about a caller once identified: the remote permissions API, its
settings and the circuit breaker in front of it, as an enrichment around a provider's
identities. Imports `cache`, `identity`, `ops`, `core` and `errors`; not `revocation`.
"""
