"""GET a JSON document from the provider (discovery, JWKS) with a bounded read; every
failure becomes ProviderUnavailable naming what was fetched."""

from __future__ import annotations

import json

import aiohttp

from extauthz_server.errors import ProviderUnavailable


async def fetch_json(
    session: aiohttp.ClientSession, url: str, *, what: str, max_bytes: int
) -> object:
    try:
        async with session.get(url, headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise ProviderUnavailable(f"{what} answered {response.status}")
            body = await response.content.read(max_bytes + 1)
    except aiohttp.ClientError as exc:
        raise ProviderUnavailable(f"{what} fetch failed: {type(exc).__name__}") from exc
    if len(body) > max_bytes:
        raise ProviderUnavailable(f"{what} too large")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProviderUnavailable(f"{what} is not JSON") from exc
