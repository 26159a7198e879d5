"""DPoP proofs used once across every replica: the replay check kept in Redis.

A proof replayed to another replica is caught there too. When Redis cannot answer, the
proof is refused (503): a replay store that is down must not turn into "never seen".
"""

from __future__ import annotations

from extauthz_server.cache.redis_cache import RedisCache
from extauthz_server.errors import ReplayCheckUnavailable


class SharedReplayGuard:
    def __init__(self, redis: RedisCache) -> None:
        self._redis = redis

    async def first_use(self, key: bytes, now: float, window_s: float) -> bool:
        answer = await self._redis.first_use(key, window_s)
        if answer is None:
            raise ReplayCheckUnavailable("Redis did not answer the DPoP replay check")
        return answer
