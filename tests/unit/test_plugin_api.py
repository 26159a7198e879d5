"""The public face for extension authors: `extauthz_server.plugin` names what a strategy of
one's own needs, as the very objects the server uses."""

from __future__ import annotations

import extauthz_server.plugin as plugin
from examples.api_key_strategy import ApiKeysOrKeycloak
from extauthz_server import errors
from extauthz_server.app.strategy_context import StrategyContext
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.identity.strategies import IdentityStrategy

PROMISED = {
    "StrategyContext": StrategyContext,
    "IdentityStrategy": IdentityStrategy,
    "Identity": Identity,
    "Inactive": Inactive,
    "ProviderError": errors.ProviderError,
    "ProviderUnavailable": errors.ProviderUnavailable,
    "ProviderRejectedClient": errors.ProviderRejectedClient,
    "ConfigError": errors.ConfigError,
}


def test_plugin_module_exports_every_promised_name_as_the_servers_own_object() -> None:
    assert sorted(plugin.__all__) == sorted(PROMISED)
    for name, expected in PROMISED.items():
        assert getattr(plugin, name) is expected, name


def test_a_strategy_written_against_the_plugin_module_satisfies_the_servers_protocol() -> None:
    assert isinstance(object.__new__(ApiKeysOrKeycloak), plugin.IdentityStrategy)
