"""The back-channel logout endpoint refuses what it cannot verify; it exists only if configured."""

from __future__ import annotations

import aiohttp
import pytest

from tests.integration.conftest import StartAuthz


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
