"""L2: the identity cache shared through Redis by every replica and worker, and the channel
on which a logout reaches all of their L1 caches. It degrades and never fails: when Redis
is down or slow, every call answers "nothing" within its timeout and checks go on."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from extauthz_server.cache.entries import (
    CacheEntry,
    EntryFormatError,
    EntrySeal,
    decode_entry,
    encode_entry,
)
from extauthz_server.cache.local_cache import Invalidation

log = logging.getLogger(__name__)

T = TypeVar("T")
# After a failure, Redis is left alone this long so that a dead server costs one timeout a
# second, not one per check.
RETRY_INTERVAL_S = 1.0
SLOW_CALLS_BEFORE_BACKING_OFF = 3
LISTEN_BACKOFF_MAX_S = 5.0
# Unreadable entries (a forgery, another key, an older format) are logged this often at most.
UNREADABLE_LOG_INTERVAL_S = 60.0
# Entries written in the background, at most this many at once; past it a write is dropped.
MAX_PENDING_WRITES = 1024
# How long closing waits for background writes before cancelling them.
CLOSE_WRITE_GRACE_S = 0.5
# Reading the revoked sessions back after a pub/sub gap (SCAN) may take this long.
SCAN_TIMEOUT_S = 5.0
MAX_INVALIDATION_BYTES = 64 * 1024


def connect(url: str, cluster: bool, timeout_s: float, max_connections: int) -> Any:
    """A pooled redis-py asyncio client (or cluster client) for `url`."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "max_connections": max_connections,
        # redis-py's default retries with backoff would outlast our own timeout; one
        # immediate retry replaces a pooled connection that died with a restarted server.
        "retry": Retry(NoBackoff(), 1),
    }
    if cluster:
        return RedisCluster.from_url(url, **options)
    return aioredis.from_url(url, **options)


class RedisCache:
    def __init__(
        self,
        client: Any,
        namespace: str,
        timeout_s: float,
        horizon_s: float,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        seal_key: bytes | None = None,
        revoked_memory_s: float = 0.0,
        max_revoked_read: int = 100_000,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._seal = EntrySeal(seal_key, namespace)
        self._timeout_s = timeout_s
        # Longest any entry can live (fresh + stale); session indexes and revocation
        # markers are kept this long.
        self._horizon_s = max(1, int(horizon_s) + 1)
        # Revoked markers live as long as processes remember ended sessions, so that one
        # that missed a logout can learn it from them (see listen).
        self._revoked_ttl_s = max(self._horizon_s, int(revoked_memory_s))
        self._max_revoked_read = max_revoked_read
        self._recovery: asyncio.Task[None] | None = None
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._retry_at = 0.0
        self._down = False
        self._slow_in_a_row = 0
        self.errors = 0
        self.unreadable_entries = 0
        self.writes_dropped = 0
        self._pending_writes: set[asyncio.Task[None]] = set()
        self.resubscriptions = 0
        self._on_resubscribed: Callable[[list[str]], int] | None = None
        self._unreadable_logged_at: float | None = None
        self.channel = f"{namespace}:invalidate"

    @property
    def available(self) -> bool:
        return not self._down

    def _entry_key(self, digest: bytes) -> str:
        return f"{self._namespace}:id:{digest.hex()}"

    def _session_key(self, session_id: str) -> str:
        return f"{self._namespace}:sid:{session_id}"

    def _subject_key(self, subject: str) -> str:
        return f"{self._namespace}:sub:{subject}"

    def _revoked_key(self, session_id: str) -> str:
        return f"{self._namespace}:revoked:{session_id}"

    def _decision_key(self, bound: bytes) -> str:
        return f"{self._namespace}:perm:{bound.hex()}"

    async def _call(
        self, what: str, operation: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T | None:
        if self._down and self._monotonic() < self._retry_at:
            return None
        try:
            async with asyncio.timeout(self._timeout_s if timeout_s is None else timeout_s):
                result = await operation()
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            if isinstance(exc, TimeoutError | RedisTimeoutError):
                # One slow answer on a busy machine is no outage; several in a row are.
                self._slow_in_a_row += 1
                if self._slow_in_a_row < SLOW_CALLS_BEFORE_BACKING_OFF:
                    return None
            self._retry_at = self._monotonic() + RETRY_INTERVAL_S
            if not self._down:
                self._down = True
                log.warning(
                    "redis unavailable during %s (%s); continuing with the in-process cache",
                    what,
                    type(exc).__name__,
                )
            return None
        self._slow_in_a_row = 0
        if self._down:
            self._down = False
            log.info("redis is available again")
        return result

    async def warm_up(self, timeout_s: float) -> None:
        """Connect (and for a cluster, learn the slot map) before the first check needs it;
        a failure only means the first checks go without Redis."""
        initialize = getattr(self._client, "initialize", None)

        async def connect() -> object:
            if initialize is not None:
                await initialize()
            return await self._client.ping()

        await self._call("connect", connect, timeout_s)

    async def get(self, digest: bytes) -> CacheEntry | None:
        data = await self._call("get", lambda: self._client.get(self._entry_key(digest)))
        if data is None:
            return None
        try:
            return decode_entry(self._seal.open(digest, data))
        except EntryFormatError as exc:
            self.unreadable_entries += 1
            now = self._monotonic()
            logged_at = self._unreadable_logged_at
            if logged_at is None or now - logged_at >= UNREADABLE_LOG_INTERVAL_S:
                self._unreadable_logged_at = now
                log.warning(
                    "ignoring an unreadable cache entry in redis (%s); %d so far",
                    exc,
                    self.unreadable_entries,
                )
            return None

    async def put(self, digest: bytes, entry: CacheEntry) -> None:
        ttl_ms = int((entry.stale_until - self._wall_clock()) * 1000)
        if ttl_ms <= 0:
            return
        sid, subject = entry.session_id, entry.subject
        if sid is not None:
            revoked = await self._call("get", lambda: self._client.exists(self._revoked_key(sid)))
            if revoked:
                return
        key = self._entry_key(digest)

        async def write() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(key, self._seal.seal(digest, encode_entry(entry)), px=ttl_ms)
            for index in (
                self._session_key(sid) if sid else None,
                self._subject_key(subject) if subject else None,
            ):
                if index is not None:
                    pipe.sadd(index, digest.hex())
                    pipe.expire(index, self._horizon_s)
            await pipe.execute()

        await self._call("put", write)
        if sid is not None:
            # A logout that read the session's index just before this write did not see the
            # entry. It wrote the session's revoked marker before reading, so the marker is
            # visible now: take the entry back out.
            revoked = await self._call("get", lambda: self._client.exists(self._revoked_key(sid)))
            if revoked:
                await self._call("put", lambda: self._client.delete(key))

    async def first_use(self, digest: bytes, window_s: float) -> bool | None:
        """Whether `digest` (a DPoP proof's key and jti) is new to every replica: set if
        absent, with the window as expiry, in one atomic command. None: Redis did not say."""
        key = f"{self._namespace}:dpop:{digest.hex()}"
        window_ms = max(1, int(window_s * 1000))

        async def claim() -> bool:
            return bool(await self._client.set(key, b"1", nx=True, px=window_ms))

        return await self._call("dpop replay check", claim)

    async def get_decision(self, digest: bytes, subject: str) -> str | None:
        """The answer another process stored for this token and subject (what was asked of
        Keycloak Authorization Services), or None. Sealed over both, so a Redis writer can
        neither forge one nor move it."""
        bound = _decision_binding(digest, subject)
        data = await self._call("get", lambda: self._client.get(self._decision_key(bound)))
        if data is None:
            return None
        try:
            return self._seal.open(bound, data).decode("utf-8")
        except (EntryFormatError, UnicodeDecodeError):
            self.unreadable_entries += 1
            return None

    def put_decision_later(self, digest: bytes, subject: str, answer: str, ttl_s: float) -> None:
        """Store an answer in the background (bounded like `put_later`)."""
        ttl_ms = int(ttl_s * 1000)
        if ttl_ms <= 0:
            return
        bound = _decision_binding(digest, subject)
        sealed = self._seal.seal(bound, answer.encode("utf-8"))
        key = self._decision_key(bound)

        async def write() -> None:
            await self._call("put", lambda: self._client.set(key, sealed, px=ttl_ms))

        self._write_later(write())

    def put_later(self, digest: bytes, entry: CacheEntry) -> None:
        """`put` in the background, so the check that learnt the entry does not wait the
        two Redis round trips (about 0.9 ms here) of writing it. Past MAX_PENDING_WRITES
        writes under way (Redis slow or gone) a write is dropped: the entry is in L1, and
        other processes ask the provider once more."""
        self._write_later(self.put(digest, entry))

    def _write_later(self, write: Coroutine[object, object, None]) -> None:
        if len(self._pending_writes) >= MAX_PENDING_WRITES:
            write.close()
            self.writes_dropped += 1
            return
        task = asyncio.create_task(write)
        self._pending_writes.add(task)
        task.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._pending_writes.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("redis write failed: %s", type(exc).__name__)

    async def settle(self, timeout_s: float | None = None) -> None:
        """Wait for the background writes under way (at most `timeout_s`)."""
        if self._pending_writes:
            await asyncio.wait(set(self._pending_writes), timeout=timeout_s)

    async def invalidate(self, invalidation: Invalidation) -> Invalidation:
        """Drop the session's (or subject's) entries from Redis, remember the session as
        revoked, and tell every process; returns the invalidation with the digests found."""
        indexes = []
        if invalidation.session_id is not None:
            indexes.append(self._session_key(invalidation.session_id))
        if invalidation.subject is not None:
            indexes.append(self._subject_key(invalidation.subject))

        async def members() -> set[bytes]:
            found: set[bytes] = set()
            for index in indexes:
                for member in await self._client.smembers(index):
                    with contextlib.suppress(ValueError):
                        found.add(
                            bytes.fromhex(member.decode() if isinstance(member, bytes) else member)
                        )
            return found

        if invalidation.session_id is not None:
            # Marked before the index is read, so that a write racing with this logout
            # either lands in the index read below or sees the marker afterwards (see put).
            revoked_key = self._revoked_key(invalidation.session_id)
            await self._call(
                "invalidate", lambda: self._client.set(revoked_key, b"1", ex=self._revoked_ttl_s)
            )
        digests = set(invalidation.digests) | (await self._call("read index", members) or set())
        complete = Invalidation(invalidation.session_id, invalidation.subject, tuple(digests))

        async def write() -> None:
            pipe = self._client.pipeline(transaction=False)
            for digest in digests:
                pipe.delete(self._entry_key(digest))
            for index in indexes:
                pipe.delete(index)
            await pipe.execute()
            await self._client.publish(self.channel, _encode_invalidation(complete))

        await self._call("invalidate", write)
        return complete

    async def listen(
        self,
        on_invalidation: Callable[[Invalidation], object],
        on_resubscribed: Callable[[list[str]], int] | None = None,
    ) -> None:
        """Apply every invalidation published by any process, until cancelled; reconnects.

        Pub/sub keeps no messages for absent subscribers, so a logout published while this
        process was not subscribed is lost. After subscribing again (after a lost
        connection, or a first attempt that failed), `on_resubscribed` gets the sessions
        Redis marks as revoked, to remember them and forget what a missed logout may have
        left (the process's L1); it returns how many entries it dropped. L2 itself was
        cleaned by the process that published.
        """
        self._on_resubscribed = on_resubscribed
        backoff = 0.2
        missed_some = False
        while True:
            pubsub = None
            try:
                initialize = getattr(self._client, "initialize", None)
                if initialize is not None:
                    # A cluster client must know the slot map before it can subscribe.
                    await initialize()
                pubsub = self._client.pubsub()
                await pubsub.subscribe(self.channel)
                backoff = 0.2
                if missed_some:
                    self._resubscribed()
                connection = getattr(pubsub, "connection", None)
                if connection is not None:
                    # redis-py reconnects a dropped pub/sub connection and subscribes again
                    # by itself, inside get_message: this is how we learn of the gap.
                    connection.register_connect_callback(self._pubsub_reconnected)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    invalidation = _decode_invalidation(message.get("data"))
                    if invalidation is not None:
                        on_invalidation(invalidation)
            except Exception as exc:
                missed_some = True
                log.debug("invalidation channel lost (%s); reconnecting", type(exc).__name__)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, LISTEN_BACKOFF_MAX_S)

    def _pubsub_reconnected(self, _connection: object) -> None:
        self._resubscribed()

    def _resubscribed(self) -> None:
        # Called from inside redis-py's reconnect too: the catching up runs as a task.
        if self._recovery is not None:
            self._recovery.cancel()
        self._recovery = asyncio.create_task(self._catch_up())

    async def _catch_up(self) -> None:
        revoked = await self.revoked_sessions()
        dropped = self._on_resubscribed(revoked) if self._on_resubscribed is not None else 0
        self.resubscriptions += 1
        log.info(
            "subscribed to invalidations again; %d revoked sessions read back, %d in-process "
            "entries dropped",
            len(revoked),
            dropped,
        )

    async def revoked_sessions(self) -> list[str]:
        """The sessions Redis marks as revoked (at most `max_revoked_read`); [] on failure."""
        prefix = self._revoked_key("")

        async def scan() -> list[str]:
            found: list[str] = []
            async for key in self._client.scan_iter(match=prefix + "*", count=1000):
                text = key.decode() if isinstance(key, bytes) else str(key)
                found.append(text[len(prefix) :])
                if len(found) >= self._max_revoked_read:
                    break
            return found

        return await self._call("scan revoked", scan, SCAN_TIMEOUT_S) or []

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
        await self.settle(CLOSE_WRITE_GRACE_S)
        for task in list(self._pending_writes):
            task.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()


def _decision_binding(digest: bytes, subject: str) -> bytes:
    """What a decision is about: the token's digest and the subject, as one digest."""
    return hashlib.sha256(digest + b"\0" + subject.encode()).digest()


def _encode_invalidation(invalidation: Invalidation) -> bytes:
    return json.dumps(
        {
            "sid": invalidation.session_id,
            "sub": invalidation.subject,
            "digests": [digest.hex() for digest in invalidation.digests],
        }
    ).encode()


def _decode_invalidation(data: object) -> Invalidation | None:
    if not isinstance(data, bytes | str) or len(data) > MAX_INVALIDATION_BYTES:
        return None
    try:
        document = json.loads(data)
        sid, sub = document.get("sid"), document.get("sub")
        digests = tuple(bytes.fromhex(item) for item in document.get("digests", []))
    except (ValueError, AttributeError, TypeError):
        log.warning("ignoring a malformed invalidation message")
        return None
    if not (isinstance(sid, str) or sid is None) or not (isinstance(sub, str) or sub is None):
        return None
    return Invalidation(session_id=sid, subject=sub, digests=digests)
