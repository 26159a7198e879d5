"""Access-token extraction from the Authorization header (RFC 6750 §2.1 Bearer, RFC 9449 §7.1
DPoP) and token digests."""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass

DEFAULT_MAX_TOKEN_BYTES = 8192

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Several Authorization headers reach us joined by commas: `Basic x, Bearer y`.
_JOINED_TOKEN = re.compile(r",\s*(bearer|dpop)(\s|$)", re.IGNORECASE)


class TokenProblem(enum.Enum):
    MISSING = "missing"
    MALFORMED = "malformed"


class Scheme(enum.Enum):
    BEARER = "Bearer"
    # RFC 9449: the token is bound to a key, and a DPoP proof must come with it.
    DPOP = "DPoP"


_SCHEMES = {"bearer": Scheme.BEARER, "dpop": Scheme.DPOP}


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    scheme: Scheme = Scheme.BEARER


def extract_token(
    authorization: str | None, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES
) -> AccessToken | TokenProblem:
    """The access token of an Authorization header value (scheme Bearer or DPoP, in any
    case), or why there is none.

    Another scheme (Basic, Digest) counts as *missing*: RFC 6750 §3.1 answers a request
    without bearer credentials with a bare challenge, not with `invalid_request`.
    Several Authorization headers reach us joined with commas and are malformed.
    """
    if authorization is None:
        return TokenProblem.MISSING
    value = authorization.strip(" \t")
    if not value:
        return TokenProblem.MISSING
    scheme_text, _, rest = value.partition(" ")
    scheme = _SCHEMES.get(scheme_text.lower())
    if scheme is None:
        if not _is_other_scheme(scheme_text) or _JOINED_TOKEN.search(value):
            return TokenProblem.MALFORMED
        return TokenProblem.MISSING
    token = rest.strip(" ")
    if not token or len(token) > max_bytes or _B64TOKEN.fullmatch(token) is None:
        return TokenProblem.MALFORMED
    return AccessToken(token, scheme)


def _is_other_scheme(scheme: str) -> bool:
    return scheme.isascii() and scheme.isalnum() and "," not in scheme


def token_digest(token: str) -> bytes:
    """The SHA-256 of a token: the only form in which a token is kept or logged."""
    return hashlib.sha256(token.encode("ascii")).digest()


def log_id(digest: bytes) -> str:
    """A short, non-reversible reference to a token for log lines."""
    return digest.hex()[:12]
