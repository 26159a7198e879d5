"""Role names with placeholders, for roles scoped to a resource ("Manager for Europe").

A provider role pattern captures part of a role name: `Manager for {region}` matches
`Manager for Europe` with `region` = `Europe`. An internal role template puts values back:
`manager:{region}`, or `manager:{region|lower}` to compare without case. The same templates
name what a route requires, filled from its path template's captures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(r"\{(" + _NAME + r")(?:\|([a-z]+))?\}")
_FILTERS = {"lower": str.lower}


class RoleTemplateError(ValueError):
    """The role name's placeholders are not valid; the message says why."""


@dataclass(frozen=True, slots=True)
class _Part:
    literal: str
    name: str | None = None
    lower: bool = False


def _parts(text: str, *, filters: bool) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    position = 0
    for found in _PLACEHOLDER.finditer(text):
        literal = text[position : found.start()]
        _check_literal(literal)
        name, filter_name = found[1], found[2]
        if filter_name is not None and (not filters or filter_name not in _FILTERS):
            allowed = "lower" if filters else "none here"
            raise RoleTemplateError(f"unknown filter |{filter_name} (allowed: {allowed})")
        parts.append(_Part(literal, name, filter_name == "lower"))
        position = found.end()
    tail = text[position:]
    _check_literal(tail)
    if tail:
        parts.append(_Part(tail))
    return tuple(parts)


def _check_literal(literal: str) -> None:
    if "{" in literal or "}" in literal:
        raise RoleTemplateError(
            "a placeholder is {name} or {name|lower}, a letter then letters, digits or _"
        )


def has_placeholder(text: str) -> bool:
    return "{" in text or "}" in text


@dataclass(frozen=True, slots=True)
class RoleTemplate:
    """An internal role name with placeholders, rendered from captured values."""

    text: str
    parts: tuple[_Part, ...]

    @classmethod
    def parse(cls, text: str) -> RoleTemplate:
        return cls(text, _parts(text, filters=True))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(part.name for part in self.parts if part.name is not None)

    @property
    def skeleton(self) -> str:
        """The literal text with every placeholder as one NUL: two templates that can name
        the same role have the same skeleton."""
        return "".join(part.literal + ("\0" if part.name else "") for part in self.parts)

    def render(self, values: Mapping[str, str]) -> str:
        pieces: list[str] = []
        for part in self.parts:
            pieces.append(part.literal)
            if part.name is not None:
                value = values[part.name]
                pieces.append(value.lower() if part.lower else value)
        return "".join(pieces)


@dataclass(frozen=True, slots=True)
class RolePattern:
    """A provider role name with placeholders, and the internal roles it maps to."""

    text: str
    regex: re.Pattern[str]
    outputs: tuple[RoleTemplate, ...]

    @classmethod
    def parse(cls, text: str, outputs: tuple[RoleTemplate, ...]) -> RolePattern:
        parts = _parts(text, filters=False)
        names = [part.name for part in parts if part.name is not None]
        if len(set(names)) != len(names):
            raise RoleTemplateError("a placeholder may appear once in a provider role name")
        regex = "".join(
            re.escape(part.literal) + (f"(?P<{part.name}>.+?)" if part.name else "")
            for part in parts
        )
        for output in outputs:
            unknown = sorted(output.names - set(names))
            if unknown:
                raise RoleTemplateError(
                    f"internal role {output.text!r} uses {{{unknown[0]}}}, which "
                    f"{text!r} does not capture"
                )
        return cls(text, re.compile(regex, re.DOTALL), outputs)

    def map(self, role: str) -> tuple[str, ...] | None:
        """The internal roles for `role`, or None when it does not have this pattern's form."""
        found = self.regex.fullmatch(role)
        if found is None:
            return None
        values = found.groupdict()
        return tuple(output.render(values) for output in self.outputs)
