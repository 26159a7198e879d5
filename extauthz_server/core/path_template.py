"""Path templates in Envoy's URI-template syntax (`envoy.path.match.uri_template`), matched on
the normalised path.

`{name}` or `{name=*}` captures exactly one non-empty segment, `{name=**}` captures the rest of
the path (zero or more segments, slashes included), and bare `*` and `**` match the same
without capturing. A `**` must be the last segment. Captured values are the decoded segment
text. Like Envoy's matcher, `/a/**` needs the slash after `a`: it matches `/a/` and `/a/b/c`,
not `/a`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VARIABLE = re.compile(r"\{([^{}=]*)(?:=([^{}]*))?\}")
_OPERATORS = frozenset("{}*")
NO_CAPTURES: Mapping[str, str] = MappingProxyType({})


class TemplateError(ValueError):
    """The template is not valid; the message says where."""


class SegmentKind(enum.Enum):
    LITERAL = "literal"
    ONE = "*"
    REST = "**"


_OPERATOR_KINDS = {"*": SegmentKind.ONE, "**": SegmentKind.REST}


@dataclass(frozen=True, slots=True)
class TemplateSegment:
    kind: SegmentKind
    # The literal text, or the capture's name (None for a bare `*` / `**`).
    text: str | None


@dataclass(frozen=True, slots=True)
class PathTemplate:
    text: str
    segments: tuple[TemplateSegment, ...]
    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        if not text.startswith("/"):
            raise TemplateError("must start with '/'")
        raw_segments = text[1:].split("/")
        segments = tuple(
            _segment(raw, index, len(raw_segments)) for index, raw in enumerate(raw_segments)
        )
        names = tuple(s.text for s in segments if s.kind is not SegmentKind.LITERAL and s.text)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise TemplateError(f"variable {{{duplicates[0]}}} is captured twice")
        return cls(text, segments, names)

    def match(self, path: str) -> Mapping[str, str] | None:
        """The captures when `path` (normalised, starting with '/') matches, else None."""
        return self.match_parts(path[1:].split("/"))

    def match_parts(self, parts: Sequence[str]) -> Mapping[str, str] | None:
        captures: dict[str, str] | None = None
        segments = self.segments
        for index, segment in enumerate(segments):
            kind = segment.kind
            if kind is SegmentKind.REST:
                if index >= len(parts):
                    return None
                if segment.text is not None:
                    captures = captures or {}
                    captures[segment.text] = "/".join(parts[index:])
                return captures or NO_CAPTURES
            if index >= len(parts):
                return None
            part = parts[index]
            if kind is SegmentKind.LITERAL:
                if part != segment.text:
                    return None
            elif not part:
                return None
            elif segment.text is not None:
                captures = captures or {}
                captures[segment.text] = part
        if len(parts) != len(segments):
            return None
        return captures or NO_CAPTURES


def _segment(raw: str, index: int, count: int) -> TemplateSegment:
    where = f"segment {index + 1} ({raw!r})"
    if raw in ("*", "**"):
        kind = _OPERATOR_KINDS[raw]
        name = None
    elif raw.startswith("{") and raw.endswith("}") and _VARIABLE.fullmatch(raw):
        match = _VARIABLE.fullmatch(raw)
        assert match is not None  # noqa: S101 - fullmatch checked just above
        name, operator = match[1], match[2] if match[2] is not None else "*"
        if _NAME.fullmatch(name) is None:
            raise TemplateError(f"{where}: a variable name is a letter then letters, digits, _")
        if operator not in ("*", "**"):
            raise TemplateError(f"{where}: a variable matches '*' or '**', not {operator!r}")
        kind = _OPERATOR_KINDS[operator]
    elif _OPERATORS.intersection(raw):
        raise TemplateError(
            f"{where}: an operator must be a whole segment: '*', '**', '{{name}}', "
            "'{name=*}' or '{name=**}'"
        )
    else:
        if index < count - 1 and not raw:
            raise TemplateError(f"{where}: empty segment ('//' never matches a normalised path)")
        if raw in (".", ".."):
            raise TemplateError(f"{where}: dot segments never match a normalised path")
        return TemplateSegment(SegmentKind.LITERAL, raw)
    if kind is SegmentKind.REST and index != count - 1:
        raise TemplateError(f"{where}: '**' must be the last segment")
    return TemplateSegment(kind, name)
