"""The checks every config section shares: an option's flat name, the choices of Literal
options, finite floats and integer lower bounds, each declared beside the field it checks."""

from __future__ import annotations

import contextlib
import math
import types
from dataclasses import Field, field, fields, is_dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from onnxmtl.errors import ConfigError, shown

T = TypeVar("T")


def option(default: T, *, flat: str | None = None, at_least: float | None = None) -> T:
    """A section field with `default`. `flat`: its name in a flat config (the option's name
    in messages, config.json and flat YAML) where that is not the field's own name;
    `at_least`: the field is no smaller than this (an integer field: an integer)."""
    metadata: dict[str, Any] = {}
    if flat is not None:
        metadata["flat"] = flat
    if at_least is not None:
        metadata["at_least"] = at_least
    made: T = field(default=default, metadata=metadata)
    return made


def flat_name(f: Field[Any]) -> str:
    """The option's name in a flat config."""
    name: str = f.metadata.get("flat", f.name)
    return name


def literal_fields(cls: type) -> dict[str, tuple[Any, ...]]:
    """The allowed values of each Literal-typed option of dataclass `cls` (and of the sections
    it holds), by flat name: the one place where an option's choices are written is its type."""
    hints = get_type_hints(cls)
    found: dict[str, tuple[Any, ...]] = {}
    for f in fields(cls):
        hint = hints[f.name]
        if getattr(hint, "__origin__", None) is Literal:
            found[flat_name(f)] = get_args(hint)
        elif isinstance(hint, type) and is_dataclass(hint):
            found.update(literal_fields(hint))
    return found


MAX_STRING = 4096  # characters in a string option (a path, a device, a name)


def refuse_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> ConfigError:
    """The error for option `name` given `value` outside `allowed`."""
    return ConfigError(
        f"config: {name}={shown(value)}; expected one of {', '.join(str(a) for a in allowed)}."
    )


def _typed(name: str, value: Any, hint: Any) -> Any:
    """`value` as option `name`'s type `hint` says: a number written as YAML 1.1 reads it as
    a string ('1e-3') becomes the float it means; a value of another type is refused."""
    allowed = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    allowed = tuple(get_origin(a) or a for a in allowed)  # dict[str, Any] -> dict
    if value is None and type(None) in allowed:
        return value
    if float in allowed:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if isinstance(value, int) and int not in allowed else value
        raise ConfigError(f"config: {name}={shown(value)}; expected a number.")
    for kind in (bool, int, str, dict):
        if kind in allowed:
            if isinstance(value, str) and len(value) > MAX_STRING:
                raise ConfigError(
                    f"config: {name} is {len(value):,} characters long; at most {MAX_STRING}."
                )
            if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
                return value
            words = {bool: "true or false", int: "an integer", str: "a string", dict: "a mapping"}
            raise ConfigError(f"config: {name}={shown(value)}; expected {words[kind]}.")
    return value


def check_fields(section: Any) -> None:
    """Refuse a value of the wrong type (reading numbers that YAML left as strings), a
    non-finite float, an integer below its field's `at_least`, or a Literal option's value
    outside its choices, naming the option by its flat name."""
    choices = literal_fields(type(section))
    hints = get_type_hints(type(section))
    for f in fields(section):
        name = flat_name(f)
        if name not in choices:
            object.__setattr__(
                section, f.name, _typed(name, getattr(section, f.name), hints[f.name])
            )
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config: {name}={value}; expected a finite number.")
        least = f.metadata.get("at_least")
        if least is not None and isinstance(value, float):
            if value < least:
                raise ConfigError(f"config: {name}={value}; expected a number >= {least}.")
        elif least is not None and (not isinstance(value, int) or value < least):
            raise ConfigError(f"config: {name} must be an integer >= {least}.")
        if name in choices and value not in choices[name]:
            raise refuse_choice(name, value, choices[name])
