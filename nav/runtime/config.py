"""Build a frozen config dataclass from a TOML/JSON table, strictly.

Unknown keys are errors, not silently ignored; a wrong type names the key. Supported field
types: bool, int, float (an int is accepted), str, tuple[float, ...] / tuple[int, ...] /
tuple[str, ...] (from a list), and ``X | None``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def _coerce(value: Any, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        last: ConfigError | None = None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                last = error
        raise last or ConfigError(f"key {key!r}: unsupported type")
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"key {key!r}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(item, item_kind, key) for item in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"key {key!r}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"key {key!r}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"key {key!r}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"key {key!r}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"key {key!r}: unsupported config type {kind!r}")


def from_table(cls: type[T], table: Mapping[str, Any]) -> T:
    """``cls(**table)`` with every key checked; ConfigError names the first bad key.

    ValueError raised by ``cls.__post_init__`` (range checks) becomes a ConfigError too.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(fields))})")
    missing = [
        name
        for name, f in fields.items()
        if name not in table
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing key {missing[0]!r}")
    values = {key: _coerce(value, hints[key], key) for key, value in table.items()}
    try:
        return cls(**values)
    except ValueError as error:
        raise ConfigError(str(error)) from None
