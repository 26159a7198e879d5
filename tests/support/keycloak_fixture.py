"""Pytest plugin: one real Keycloak per test session (fixture `keycloak`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.keycloak import Keycloak, KeycloakError, KeycloakSettings


@pytest.fixture(scope="session")
def keycloak(request: pytest.FixtureRequest) -> Iterator[Keycloak]:
    """A started Keycloak with the demo realm; fails (never skips) when it cannot run."""
    settings = KeycloakSettings.from_environ(os.environ)
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")

    def progress(message: str) -> None:
        # Past pytest's output capture, so the long waits show even without -s.
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[keycloak] {message}")

    problem: str | None = None
    try:
        server = Keycloak.start(settings, progress)
    except KeycloakError as exc:
        problem = str(exc)  # failed outside the except block so no chained traceback shows
    if problem is not None:
        pytest.fail(f"Keycloak {settings.version} could not be started: {problem}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
