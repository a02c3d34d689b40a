"""A config's two spellings: flat (`search_steps: 150`, as config.json stores it and every
YAML file before sections) and nested (`search: {steps: 150}`), and the map between them."""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from onnxmtl.errors import ConfigError
from onnxmtl.training.config.check import flat_name
from onnxmtl.training.config.sections import (
    CostOptions,
    DatasetOptions,
    DeployOptions,
    EvaluationOptions,
    LossOptions,
    PostTrainOptions,
    RuntimeOptions,
    SearchOptions,
    SelectOptions,
    WarmupOptions,
)

SECTIONS: dict[str, type] = {
    "runtime": RuntimeOptions,
    "dataset": DatasetOptions,
    "loss": LossOptions,
    "warmup": WarmupOptions,
    "search": SearchOptions,
    "select": SelectOptions,
    "cost": CostOptions,
    "post_train": PostTrainOptions,
    "evaluation": EvaluationOptions,
    "deploy": DeployOptions,
}

# flat option name -> (section, field), in the order of the sections and their fields
FLAT: dict[str, tuple[str, str]] = {
    flat_name(f): (section, f.name) for section, cls in SECTIONS.items() for f in fields(cls)
}


def _unknown(name: str, known: list[str]) -> str:
    """`name`, with the known option it most resembles if one does."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"{name} (did you mean {close[0]}?)" if close else name


def flatten(data: dict[Any, Any]) -> dict[str, Any]:
    """The options of `data`, a mapping of flat options, of sections (`search: {steps: 3}`)
    or of both, by flat name. A mapping under `cost` is its section, any other value the
    flat option `cost`. Unknown options and an option given twice are refused."""
    flat: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key in SECTIONS and (key != "cost" or isinstance(value, dict)):
            if not isinstance(value, dict):
                raise ConfigError(f"config: {key}: expected a mapping of option: value.")
            names = {f.name: flat_name(f) for f in fields(SECTIONS[key])}
            for name, inner in value.items():
                if name not in names:
                    unknown.append(_unknown(f"{key}.{name}", [f"{key}.{n}" for n in names]))
                elif names[name] in flat or (names[name] != key and names[name] in data):
                    raise ConfigError(
                        f"config: {names[name]} is given twice (as {names[name]} and as "
                        f"{key}.{name}); keep one."
                    )
                else:
                    flat[names[name]] = inner
        elif key in FLAT:
            flat[key] = value
        else:
            unknown.append(_unknown(str(key), list(FLAT)))
    if unknown:
        raise ConfigError(
            f"config: unknown option(s) {', '.join(unknown)}; see "
            "onnxmtl.training.SearchConfig for the options and their defaults."
        )
    return flat
