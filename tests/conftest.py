"""Shared pytest configuration for every test directory."""

pytest_plugins = [
    "tests.support.envoy_fixture",
    "tests.support.keycloak_fixture",
    "tests.support.redis_fixture",
]
