"""The back-channel logout endpoint refuses what it cannot verify; it exists only if configured,
and on a listener of its own when `server.logout_listen` says so."""

from __future__ import annotations

import aiohttp
import pytest

from extauthz_server.config.model import parse_config
from extauthz_server.errors import ConfigError
from tests.integration.conftest import StartAuthz
from tests.support.configs import seed_config_text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("logout_token=not-a-jwt", "application/x-www-form-urlencoded"),
        ("", "application/x-www-form-urlencoded"),
        ('{"logout_token": "x"}', "application/json"),
        ("logout_token=eyJhbGciOiJub25lIn0.eyJzaWQiOiJ4In0.", "application/x-www-form-urlencoded"),
    ],
    ids=["garbage", "missing", "json-body", "alg-none"],
)
async def test_unverifiable_logout_requests_get_400_and_change_nothing(
    start_authz: StartAuthz, body: str, content_type: str
) -> None:
    authz = await start_authz(provider={"logout_audiences": ["web-app"]})

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            authz.http_base + "/backchannel-logout",
            data=body,
            headers={"Content-Type": content_type},
        ) as response,
    ):
        assert response.status == 400
        assert response.headers["Cache-Control"] == "no-store"
        assert (await response.json())["error"] == "invalid_request"


async def test_logout_endpoint_is_not_served_unless_logout_audiences_are_configured(
    start_authz: StartAuthz,
) -> None:
    authz = await start_authz()

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            authz.http_base + "/backchannel-logout", data={"logout_token": "x"}
        ) as response,
    ):
        assert response.status == 404


async def test_with_logout_listen_logouts_have_a_listener_of_their_own(
    start_authz: StartAuthz,
) -> None:
    authz = await start_authz(
        server={"http_listen": "127.0.0.1:0", "logout_listen": "127.0.0.1:0"},
        provider={"logout_audiences": ["web-app"]},
    )
    logout_base = f"http://127.0.0.1:{authz.server.logout_port}"
    form = {"logout_token": "not-a-jwt"}

    async with aiohttp.ClientSession() as session:
        async with session.post(logout_base + "/backchannel-logout", data=form) as there:
            logout_status = there.status
        async with session.post(authz.http_base + "/backchannel-logout", data=form) as ops:
            ops_status = ops.status
        async with session.get(logout_base + "/metrics") as metrics_there:
            metrics_on_logout_port = metrics_there.status
        async with session.get(authz.http_base + "/metrics") as metrics:
            metrics_status = metrics.status

    # The logout endpoint answers (and refuses what it cannot verify) only on its own port;
    # metrics stay on the operational one.
    assert (logout_status, ops_status) == (400, 404)
    assert (metrics_status, metrics_on_logout_port) == (200, 404)


def test_logout_listen_without_logout_audiences_is_a_configuration_error() -> None:
    text = seed_config_text(
        "http://127.0.0.1:9/realms/demo", server={"logout_listen": "127.0.0.1:0"}
    )

    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})

    assert caught.value.key_path == "server.logout_listen"
    assert "logout_audiences" in caught.value.problem
