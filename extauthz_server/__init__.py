"""extauthz-server: Envoy external authorization backed by Keycloak token introspection."""

__version__ = "0.1.0"
