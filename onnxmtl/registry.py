"""The one rule every registry (converters, heads, datasets, costs, weightings) follows."""

from __future__ import annotations

from typing import Any

from onnxmtl.errors import ConfigError


def add(table: dict[Any, Any], key: Any, value: Any, what: str, override: bool) -> None:
    """Put `value` under `key` in `table`; a key registered already is refused unless
    `override`, so that two extensions cannot silently replace each other."""
    if key in table and not override:
        raise ConfigError(
            f"{what} {key!r} is registered already; pick another name, or pass override=True "
            "to replace it."
        )
    table[key] = value
