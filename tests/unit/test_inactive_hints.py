"""`check` on a token the provider calls inactive: the likely causes the token itself shows
(another host name for the issuer, an audience without our client, expiry)."""

from __future__ import annotations

import pytest

from extauthz_server.app.explain import inactive_hints
from extauthz_server.config.model import parse_config

CONFIG = """\
provider:
  issuer: "http://127.0.0.1:8080/realms/demo"
  client_id: ext-authz
  client_secret: s3cret
"""
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("claims", "hints"),
    [
        (
            {"iss": "http://localhost:8080/realms/demo", "aud": ["ext-authz"], "exp": NOW + 60},
            [
                "the token was issued by http://localhost:8080/realms/demo but provider.issuer "
                "is http://127.0.0.1:8080/realms/demo: Keycloak takes another host name for "
                "another issuer and answers inactive; use the same host in both (or fix "
                "Keycloak's hostname)"
            ],
        ),
        (
            {"iss": "http://127.0.0.1:8080/realms/other", "exp": NOW + 60},
            [
                "the token was issued by http://127.0.0.1:8080/realms/other, which no provider's "
                "issuer names"
            ],
        ),
        (
            {"iss": "http://127.0.0.1:8080/realms/demo", "aud": "forms-api", "exp": NOW + 60},
            [
                "the token's aud (forms-api) names no provider.client_id (ext-authz): Keycloak "
                "26.6.2+ answers inactive to a client the token is not for (add an audience "
                "mapper)"
            ],
        ),
        (
            {"iss": "http://127.0.0.1:8080/realms/demo", "exp": NOW - 90},
            ["the token expired 90 s ago"],
        ),
        ({"iss": "http://127.0.0.1:8080/realms/demo", "exp": NOW + 60}, []),
        (None, []),
    ],
    ids=["other-host", "other-realm", "audience", "expired", "nothing-to-see", "not-a-jwt"],
)
def test_an_inactive_token_gets_the_hints_it_shows(
    claims: dict[str, object] | None, hints: list[str]
) -> None:
    providers = parse_config(CONFIG, {}).providers

    assert list(inactive_hints(claims, providers, NOW)) == hints
