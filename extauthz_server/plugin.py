"""The public face for extension authors: everything a strategy of your own needs.

    provider:
      strategy: mypackage.mymodule:MyStrategy

`MyStrategy(context)` is called once at start with a `StrategyContext`; the object it returns
has `async identify(token, timeout_s) -> Identity | Inactive` (the `IdentityStrategy`
protocol) and raises `ProviderUnavailable` when it cannot tell. Import these names from here
only: the modules behind them may move between releases, this module's names will not.
"""

from __future__ import annotations

from extauthz_server.app.strategy_context import StrategyContext
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.errors import (
    ConfigError,
    ProviderError,
    ProviderRejectedClient,
    ProviderUnavailable,
)
from extauthz_server.identity.strategies import IdentityStrategy

__all__ = [
    "ConfigError",
    "Identity",
    "IdentityStrategy",
    "Inactive",
    "ProviderError",
    "ProviderRejectedClient",
    "ProviderUnavailable",
    "StrategyContext",
]
