"""Small composable validators over parsed YAML, each error naming the key path it is about."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Final, TypeVar

import yaml

from extauthz_server.core.secret import Secret
from extauthz_server.errors import ConfigError

E = TypeVar("E", bound=Enum)


class _Required:
    pass


class EnvValue(str):
    """The text of an `EXTAUTHZ__…` override, read as the type its key expects: a string key
    takes it verbatim (so a secret of digits stays a string), others parse it as YAML."""

    variable: str

    def __new__(cls, text: str, variable: str) -> EnvValue:
        value = super().__new__(cls, text)
        value.variable = variable
        return value

    def parsed(self) -> object:
        try:
            return yaml.safe_load(self)
        except yaml.YAMLError:
            # PyYAML's message quotes the text, which may be a secret.
            raise ConfigError(self.variable, "value is not valid YAML") from None


REQUIRED: Final = _Required()
_YAML_NULLS = frozenset({"", "~", "null", "Null", "NULL"})


def describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


def alternatives(choices: Sequence[str]) -> str:
    """`a, b or c`: the values a key takes, for an error message."""
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


class Section:
    """One mapping of the configuration; every key read is marked, `finish()` refuses the rest."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path or "(top level)", f"expected a mapping, got {describe(data)}")
        self._data: Mapping[str, object] = data
        self.path = path
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        value = self._data.get(name)
        if isinstance(value, EnvValue):
            return value.strip() not in _YAML_NULLS
        return value is not None

    def raw(self, name: str, default: object = None, *, text: bool = False) -> object:
        """The value at `name`; an override is parsed as YAML unless `text` is wanted."""
        self._read.add(name)
        value = self._data.get(name)
        if isinstance(value, EnvValue) and not text:
            value = value.parsed()
        if value is None:
            if isinstance(default, _Required):
                raise ConfigError(self.key(name), "is required")
            return default
        return value

    def string(self, name: str, default: str | _Required = REQUIRED) -> str:
        value = self.raw(name, default, text=True)
        if not isinstance(value, str) or not value:
            raise ConfigError(self.key(name), f"expected a non-empty string, got {describe(value)}")
        return value

    def optional_string(self, name: str) -> str | None:
        if not self.has(name):
            self._read.add(name)
            return None
        return self.string(name)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {describe(value)}")
        return value

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"expected an integer, got {describe(value)}")
        if not minimum <= value <= maximum:
            raise ConfigError(
                self.key(name), f"must be between {minimum} and {maximum}, got {value}"
            )
        return value

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.key(name), f"expected a number, got {describe(value)}")
        if not minimum <= value <= maximum:
            raise ConfigError(
                self.key(name), f"must be between {minimum} and {maximum}, got {value}"
            )
        return float(value)

    def string_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(self.key(name), "expected a list of strings")
        return tuple(value)

    def choice(
        self,
        name: str,
        choices: Sequence[str],
        default: str | _Required = REQUIRED,
        *,
        upper: bool = False,
    ) -> str:
        """One of `choices` (`default` when the key is absent); `upper`: written in any case
        and given back upper-cased."""
        text = self.string(name, default)
        chosen = text.upper() if upper else text
        if chosen not in choices:
            raise ConfigError(self.key(name), f"expected {alternatives(choices)}, got {text!r}")
        return chosen

    def member(
        self, name: str, kind: type[E], default: E | _Required = REQUIRED, *, upper: bool = False
    ) -> E:
        """The member of the enum `kind` whose value is written (`default` when the key is
        absent); the error names every value, as `choice` does."""
        values = [str(member.value) for member in kind]
        fallback = default if isinstance(default, _Required) else str(default.value)
        return kind(self.choice(name, values, fallback, upper=upper))

    def subset(self, name: str, allowed: frozenset[str]) -> frozenset[str]:
        """A non-empty list drawn from `allowed` (all of it by default), e.g. algorithms."""
        chosen = frozenset(self.string_list(name, tuple(sorted(allowed))))
        unknown = sorted(chosen - allowed)
        if unknown or not chosen:
            raise ConfigError(
                self.key(name),
                f"{unknown[0] if unknown else 'an empty list'} is not allowed; choose from "
                + ", ".join(sorted(allowed)),
            )
        return chosen

    def section(self, name: str) -> Section:
        return Section(self.raw(name, {}), self.key(name))

    def mapping(self, name: str) -> dict[str, object]:
        """A mapping with keys of the user's choosing (a section's keys are checked instead)."""
        value = self.raw(name, {})
        if not isinstance(value, dict):
            raise ConfigError(self.key(name), f"expected a mapping, got {describe(value)}")
        return value

    def items(self, name: str) -> list[object]:
        value = self.raw(name, [])
        if not isinstance(value, list):
            raise ConfigError(self.key(name), f"expected a list, got {describe(value)}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            name = str(unknown[0])
            close = difflib.get_close_matches(name, sorted(self._read), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(self.key(name), f"unknown key{hint}")


def optional_secret(section: Section, name: str, base_dir: Path) -> Secret | None:
    """The secret at `name`, or read from the file at `name`_file (relative to `base_dir`)."""
    inline = section.optional_string(name)
    file_name = section.optional_string(f"{name}_file")
    if inline is not None and file_name is not None:
        raise ConfigError(section.key(f"{name}_file"), f"give {name} or {name}_file, not both")
    if file_name is None:
        return None if inline is None else Secret(inline)
    try:
        text = (base_dir / file_name).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(section.key(f"{name}_file"), f"cannot read: {exc.strerror}") from exc
    if not text:
        raise ConfigError(section.key(f"{name}_file"), "the file is empty")
    return Secret(text)


def secret_key_path(section: Section, name: str) -> str:
    """The key the secret of `optional_secret(section, name, …)` was given at, for errors
    about its value."""
    return section.key(f"{name}_file" if section.has(f"{name}_file") else name)
