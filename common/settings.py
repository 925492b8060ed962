"""Strict readers for configuration documents (YAML policy, TOML plugin config).

Each reader takes the parsed value and its dotted location in the document,
and raises ConfigError whose message names that location and the offending
value. Unknown keys are errors, so a misspelt key never silently falls back
to a default.
"""

from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration document that cannot be used as it is."""

    def __init__(self, problems: Iterable[str], source: str = ""):
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = f"{where}{self.problems[0]}"
        else:
            message = f"{where}{len(self.problems)} problems:\n" + "\n".join(
                f"  - {problem}" for problem in self.problems
            )
        super().__init__(message)


def field_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def check_mapping(value: Any, where: str, allowed_keys: Iterable[str]) -> Mapping[str, Any]:
    """Return `value` as a mapping, or raise if it is not one or has unknown keys."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError([f"{where or 'document'}: expected a mapping, got {value!r}"])
    allowed = list(allowed_keys)
    unknown = [key for key in value if key not in allowed]
    if unknown:
        raise ConfigError(
            [
                f"{field_path(where, str(key))}: unknown key {key!r}; accepted keys: {', '.join(allowed)}"
                for key in unknown
            ]
        )
    return value


def get_str(value: Any, where: str, *, choices: Iterable[str] | None = None, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError([f"{where}: expected a string, got {value!r}"])
    if not value and not allow_empty:
        raise ConfigError([f"{where}: must not be empty"])
    if choices is not None:
        options = list(choices)
        if value not in options:
            raise ConfigError([f"{where}: invalid value {value!r}; expected one of: {', '.join(options)}"])
    return value


def get_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError([f"{where}: expected true or false, got {value!r}"])
    return value


def get_int(value: Any, where: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError([f"{where}: expected an integer, got {value!r}"])
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError([f"{where}: {value!r} is out of range [{minimum}, {maximum}]"])
    return value


def get_str_list(value: Any, where: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    """Read a list of non-empty, distinct strings."""
    if not isinstance(value, list):
        raise ConfigError([f"{where}: expected a list of strings, got {value!r}"])
    if not value and not allow_empty:
        raise ConfigError([f"{where}: must not be empty"])
    items: list[str] = []
    for index, item in enumerate(value):
        item = get_str(item, field_path(where, index))
        if item in items:
            raise ConfigError([f"{field_path(where, index)}: duplicate value {item!r}"])
        items.append(item)
    return tuple(items)


def positive_seconds(text: str) -> float:
    """Parse a command-line number of seconds: finite and above zero (an argparse `type`)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}; expected a positive number such as 2 or 0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}; expected a positive finite number such as 2 or 0.5")
    return value
