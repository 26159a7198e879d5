"""The `dpop:` and `mtls:` sections and each provider's `dpop:` key: defaults, and errors that
name the key."""

from __future__ import annotations

import pytest

from extauthz_server.config.model import parse_config
from extauthz_server.core.dpop import PROOF_ALGORITHMS
from tests.unit.test_config import PROVIDER, ROLES, config_error

ROUTES = "routes:\n  - {name: a, path_prefix: /a}\n"


def test_defaults_follow_keycloak() -> None:
    config = parse_config(PROVIDER + ROLES + ROUTES, {})
    assert config.provider.dpop_required is False
    rules = config.sender.dpop
    assert rules.algorithms == PROOF_ALGORITHMS
    assert (rules.max_age_s, rules.future_skew_s, rules.external_scheme) == (25, 15, None)
    assert config.sender.certificate_header is None


def test_every_key_is_read() -> None:
    text = (
        PROVIDER
        + "  dpop: required\n"
        + ROLES
        + ROUTES
        + "dpop: {algorithms: [ES256, EdDSA], max_age_seconds: 10, clock_skew_seconds: 2,"
        + " external_scheme: https, replay_max_entries: 1000}\n"
        + "mtls: {certificate_header: X-Forwarded-Client-Cert}\n"
    )
    config = parse_config(text, {})
    assert config.provider.dpop_required is True
    rules = config.sender.dpop
    assert rules.algorithms == {"ES256", "EdDSA"}
    assert (rules.max_age_s, rules.future_skew_s, rules.external_scheme) == (10, 2, "https")
    assert config.sender.replay_max_entries == 1000
    assert config.sender.certificate_header == "x-forwarded-client-cert"


@pytest.mark.parametrize(
    ("addition", "key"),
    [
        ("dpop: {algorithms: [HS256]}", "dpop.algorithms"),
        ("dpop: {algorithms: []}", "dpop.algorithms"),
        ("dpop: {external_scheme: ftp}", "dpop.external_scheme"),
        ("dpop: {max_age_seconds: 0}", "dpop.max_age_seconds"),
        ("dpop: {clock_skew_seconds: -1}", "dpop.clock_skew_seconds"),
        ("dpop: {replay_max_entries: 0}", "dpop.replay_max_entries"),
        ("dpop: {nonce: true}", "dpop.nonce"),
        ("mtls: {certificate_header: 'x cert'}", "mtls.certificate_header"),
    ],
)
def test_a_bad_value_names_its_key(addition: str, key: str) -> None:
    error = config_error(PROVIDER + ROLES + ROUTES + addition + "\n")
    assert error.key_path == key


def test_a_provider_dpop_value_other_than_allowed_or_required_is_named() -> None:
    error = config_error(PROVIDER + "  dpop: always\n" + ROLES + ROUTES)
    assert error.key_path == "provider.dpop"
    assert "allowed or required" in error.problem
