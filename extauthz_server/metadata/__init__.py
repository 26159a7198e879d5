"""What else we learn about a caller once identified: the remote permissions API (an
enrichment around a provider's identities, with its circuit breaker), and Keycloak
Authorization Services' decisions for a route's resource and scope. Imports `cache`,
`identity`, `ops`, `core` and `errors`; not `revocation`.
"""
