"""Request-path normalisation: the path that route policy matches is the one the upstream serves.

Percent-decoding, dropping of `;` path parameters, merging of repeated slashes and
dot-segment removal (RFC 3986 §5.2.4) are done here so that `/public/../admin`,
`/public/%2e%2e/admin`, `/admin;x`, `/public/..;/admin` and `//admin` are all `/admin`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

_HEX = frozenset("0123456789abcdefABCDEF")
_AMBIGUOUS_ESCAPES = frozenset({"3F", "23"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Anything that decoding, slash merging or dot-segment removal could change, or refuse.
_NEEDS_WORK = re.compile(r"[%.;\\\x00-\x1f\x7f]|//")


class PathError(ValueError):
    """The path cannot be interpreted safely; the request gets a 400."""


def split_query(raw_path: str) -> tuple[str, str]:
    """Split Envoy's `:path` into path and query; the fragment never reaches a server."""
    path, _, query = raw_path.partition("?")
    path = path.partition("#")[0]
    return path, query


def normalise_path(raw_path: str) -> str:
    """Decode, merge slashes and remove dot segments; raise PathError where that is unsafe."""
    path, _query = split_query(raw_path)
    if not path.startswith("/"):
        # Envoy always forwards an origin-form path; anything else (`*`, absolute-form) is refused.
        raise PathError("path must start with '/'")
    if _NEEDS_WORK.search(path) is None:
        # Nothing to decode, merge or remove: the common case costs one scan.
        return path
    _check_percent_escapes(path)
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeError as exc:
        raise PathError("path is not valid UTF-8 after percent-decoding") from exc
    if _CONTROL.search(decoded) is not None:
        raise PathError("path contains control characters")
    if "\\" in decoded:
        # Some upstreams treat a backslash as a separator; refusing it avoids a second reading.
        raise PathError("path contains a backslash")
    return remove_dot_segments(_merge_slashes(_drop_parameters(decoded)))


def _check_percent_escapes(path: str) -> None:
    index = path.find("%")
    while index != -1:
        escape = path[index + 1 : index + 3]
        if len(escape) != 2 or not set(escape) <= _HEX:
            raise PathError("path has an invalid percent-escape")
        if escape.upper() in _AMBIGUOUS_ESCAPES:
            # Decoded, `/admin%3Fx=/api/forms` is judged as a path under `/`, while an upstream
            # that decodes twice (or splits before decoding) serves `/admin`: refuse to guess.
            raise PathError("path has an encoded '?' or '#'")
        index = path.find("%", index + 3)


def _drop_parameters(path: str) -> str:
    """`/admin;x` and `/public/..;/admin` are `/admin` to Tomcat, Jetty and Spring, which
    drop `;…` from a segment (RFC 3986 §3.3 path parameters): judge what they serve."""
    if ";" not in path:
        return path
    return "/".join(segment.partition(";")[0] for segment in path.split("/"))


def _merge_slashes(path: str) -> str:
    while "//" in path:
        path = path.replace("//", "/")
    return path


def remove_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]
    output: list[str] = []
    for segment in segments:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    # A trailing dot segment names a directory, so the result keeps its trailing slash.
    trailing = "/" if segments and segments[-1] in (".", "..") and output else ""
    return "/" + "/".join(output) + trailing
