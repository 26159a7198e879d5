"""CacheEntry: what both cache levels hold for a token digest, and its wire form for Redis.

Only the derived identity is kept (never the token, never the introspection document).
Times are epoch seconds so that every process sharing Redis reads them alike.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from extauthz_server.core.identity import Confirmation, Identity, Inactive
from extauthz_server.core.secret import Secret

# 2: entries carry the token's binding (cnf); a version-1 entry, written before bindings
# were read, may describe a bound token as a plain one, so it is never read.
FORMAT_VERSION = 2


@dataclass(frozen=True, slots=True)
class CacheEntry:
    result: Identity | Inactive
    fresh_until: float
    # Past fresh_until the entry may still answer while the provider is failing, until this.
    stale_until: float

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def is_usable_stale(self, now: float) -> bool:
        return isinstance(self.result, Identity) and now < self.stale_until

    @property
    def session_id(self) -> str | None:
        return self.result.session_id if isinstance(self.result, Identity) else None

    @property
    def subject(self) -> str | None:
        return self.result.subject if isinstance(self.result, Identity) else None


def entry_size(entry: CacheEntry) -> int:
    """A rough byte count of an entry in memory, for the L1 byte bound."""
    result = entry.result
    if not isinstance(result, Identity):
        return 120
    text = [result.subject, result.username, result.email, result.client_id, result.session_id]
    strings = [*text, *result.scopes, *result.provider_roles, *result.audience]
    # Calibrated with bench/memory.py: 100,000 Keycloak-shaped identities take about 1.9 KiB
    # each in RSS, index entries and LRU bookkeeping included.
    claims = 0 if result.claims is None else 3 * len(json.dumps(result.claims, default=str))
    return 900 + claims + sum(60 + len(s) for s in strings if s)


def encode_entry(entry: CacheEntry) -> bytes:
    result = entry.result
    document: dict[str, object] = {
        "v": FORMAT_VERSION,
        "fresh_until": entry.fresh_until,
        "stale_until": entry.stale_until,
    }
    if isinstance(result, Inactive):
        document["inactive"] = result.value
    else:
        document["identity"] = {
            "sub": result.subject,
            "username": result.username,
            "email": result.email,
            "client_id": result.client_id,
            "scopes": sorted(result.scopes),
            "roles": sorted(result.provider_roles),
            "exp": result.expires_at,
            "sid": result.session_id,
            "aud": list(result.audience),
        }
        if result.claims is not None:
            document["identity"]["claims"] = result.claims  # type: ignore[index]
        if result.confirmation is not None:
            document["identity"]["cnf"] = {  # type: ignore[index]
                "jkt": result.confirmation.jkt,
                "x5t#S256": result.confirmation.x5t_s256,
            }
    # A strategy of one's own may hand over claims JSON cannot hold: they are written as text.
    return json.dumps(document, separators=(",", ":"), default=str).encode()


class EntryFormatError(ValueError):
    pass


def decode_entry(data: bytes) -> CacheEntry:
    """Raises EntryFormatError for anything not written by encode_entry of this version."""
    try:
        document = json.loads(data)
        if document.get("v") != FORMAT_VERSION:
            raise EntryFormatError("unknown format version")
        fresh_until = float(document["fresh_until"])
        stale_until = float(document["stale_until"])
        if "inactive" in document:
            return CacheEntry(Inactive(document["inactive"]), fresh_until, stale_until)
        raw = document["identity"]
        identity = Identity(
            subject=_text(raw["sub"]),
            username=_optional(raw.get("username")),
            email=_optional(raw.get("email")),
            client_id=_optional(raw.get("client_id")),
            scopes=frozenset(_texts(raw.get("scopes", []))),
            provider_roles=frozenset(_texts(raw.get("roles", []))),
            expires_at=None if raw.get("exp") is None else float(raw["exp"]),
            session_id=_optional(raw.get("sid")),
            audience=tuple(_texts(raw.get("aud", []))),
            claims=_claims(raw.get("claims")),
            confirmation=_confirmation(raw.get("cnf")),
        )
        return CacheEntry(identity, fresh_until, stale_until)
    except EntryFormatError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EntryFormatError(f"malformed cache entry: {type(exc).__name__}") from None


def _claims(value: object) -> dict[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EntryFormatError("claims are not an object")
    return value


def _confirmation(value: object) -> Confirmation | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EntryFormatError("cnf is not an object")
    jkt, x5t = _optional(value.get("jkt")), _optional(value.get("x5t#S256"))
    if jkt is None and x5t is None:
        raise EntryFormatError("cnf names no key")
    return Confirmation(jkt=jkt, x5t_s256=x5t)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise EntryFormatError("expected a string")
    return value


def _optional(value: object) -> str | None:
    return None if value is None else _text(value)


def _texts(value: object) -> list[str]:
    if not isinstance(value, list):
        raise EntryFormatError("expected a list")
    return [_text(item) for item in value]


_SEAL_PREFIX = b"s1."
_SEAL_LABEL = b"extauthz-server redis entry seal v1"
_TAG_BYTES = hashlib.sha256().digest_size


def seal_key(secret: Secret) -> bytes:
    """The HMAC key for entries, derived so that the secret itself (say, the provider's
    client secret) is never used for anything but its own purpose."""
    return hmac.new(secret.reveal().encode(), _SEAL_LABEL, hashlib.sha256).digest()


class EntrySeal:
    """An HMAC-SHA256 over an entry, its token digest and its namespace. Whoever can write
    to Redis but lacks the key can then drop entries but not grant access: they can neither
    forge an identity nor move one to another token's or another provider's key. Without a
    key, entries go unsealed."""

    def __init__(self, key: bytes | None, namespace: str) -> None:
        self._key = key
        self._context = namespace.encode() + b"\0"

    def seal(self, digest: bytes, payload: bytes) -> bytes:
        if self._key is None:
            return payload
        return _SEAL_PREFIX + self._tag(self._key, digest, payload) + payload

    def open(self, digest: bytes, data: bytes) -> bytes:
        """The payload; raises EntryFormatError when a key is set and the seal is missing
        or does not verify."""
        if self._key is None:
            return data
        start = len(_SEAL_PREFIX) + _TAG_BYTES
        if not data.startswith(_SEAL_PREFIX) or len(data) < start:
            raise EntryFormatError("unsealed cache entry")
        tag, payload = data[len(_SEAL_PREFIX) : start], data[start:]
        if not hmac.compare_digest(tag, self._tag(self._key, digest, payload)):
            raise EntryFormatError("cache entry seal does not verify")
        return payload

    def _tag(self, key: bytes, digest: bytes, payload: bytes) -> bytes:
        return hmac.new(key, self._context + digest + payload, hashlib.sha256).digest()
