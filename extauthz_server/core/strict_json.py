"""JSON written by other parties (the provider, the permissions API, a token), read strictly.

Pure: no I/O. RFC 8259 only: NaN and Infinity are refused (an `exp` of NaN would never
expire), and every failure, nesting too deep included, is a ValueError.
"""

from __future__ import annotations

import json

# An OAuth error body is read only this far, and only for its `error` code.
MAX_ERROR_BODY_BYTES = 4096


def loads_strict(data: bytes | str) -> object:
    """The document in `data`; raises ValueError for anything that is not strict JSON."""
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def oauth_error_code(body: bytes) -> str | None:
    """The OAuth `error` code of an error answer (RFC 6749 §5.2), for logs: never the
    description, never the body."""
    try:
        document = loads_strict(body[:MAX_ERROR_BODY_BYTES])
    except ValueError:
        return None
    code = document.get("error") if isinstance(document, dict) else None
    return code if isinstance(code, str) and len(code) <= 64 else None


def _reject_constant(name: str) -> object:
    raise ValueError(f"non-JSON constant {name}")
