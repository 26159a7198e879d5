"""Who is calling: the identity strategies (introspection, JWT, or both), the provider's
endpoints (discovery) and signing keys (JWKS), our client's own credentials, and the router that
sends a token to its provider. Imports `core`, `ops` and `errors`.
"""
