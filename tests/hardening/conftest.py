"""Hardening suite: faults under load, hostile input, fuzz smoke, soak.

Everything here runs in the default `pytest` invocation (CI runs it all, about two minutes);
`-m "not slow"` skips the load-driven parts locally.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: drives load for tens of seconds (fault scenarios, soak)"
    )
