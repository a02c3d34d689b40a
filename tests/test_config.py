"""SearchConfig: every option with a fixed set of values is typed as a Literal and refused,
with the allowed list, when it is given anything else; options come flat or in sections, and
a config is frozen."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from onnxmtl.cli import build_parser
from onnxmtl.errors import ConfigError
from onnxmtl.training import SearchConfig
from onnxmtl.training.config import FLAT, SECTIONS, literal_fields
from onnxmtl.training.config.flat import flatten

CHOICES = literal_fields(SearchConfig)


def test_every_string_option_with_fixed_values_is_a_literal():
    assert set(CHOICES) == {
        "precision",
        "search_mode",
        "search_update",
        "soft_mix",
        "skip_projection",
        "policy_lr_schedule",
        "sharing_prior",
        "conflict_score",
        "latency_provider",
        "derive",
        "post_train_lr_schedule",
        "post_train_init",
        "select_start",
        "log_format",
    }
    defaults = SearchConfig().to_dict()
    for name, allowed in CHOICES.items():
        assert defaults[name] in allowed


def test_the_cli_offers_the_values_the_config_takes():
    for command in ("search", "train", "run"):
        for value in _choices(command, "--precision"):
            assert SearchConfig.from_dict({"precision": value}).runtime.precision == value
    for value in _choices("compile", "--skip-projection"):
        assert SearchConfig.from_dict({"skip_projection": value}).search.skips == value


def _choices(command: str, flag: str) -> list[str]:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in commands.choices[command]._actions if flag in a.option_strings)
    assert action.choices is not None
    return list(action.choices)


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_a_value_outside_a_literal_is_refused_with_the_allowed_list(name):
    allowed = CHOICES[name]
    for value in allowed:
        assert SearchConfig.from_dict({name: value}).to_dict()[name] == value
    message = f"config: {name}='nonsense'; expected one of {', '.join(allowed)}."
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchConfig.from_dict({name: "nonsense"})


def test_every_flat_option_has_one_place_in_a_section():
    assert list(SearchConfig().to_dict()) == list(FLAT)
    for name, (section, field) in FLAT.items():
        assert section in SECTIONS and hasattr(getattr(SearchConfig(), section), field), name


def test_nested_sections_read_as_their_flat_options(tmp_path):
    flat = {"search_steps": 7, "search_mode": "soft", "cost": "macs", "cost_budget": 0.5}
    flat |= {"data": {"count": 8}, "batch_size": 4, "eval_batches": 2, "warmup_lr": 0.01}
    nested = {
        "search": {"steps": 7, "mode": "soft"},
        "cost": {"name": "macs", "budget": 0.5},
        "dataset": {"options": {"count": 8}, "batch_size": 4},
        "evaluation": {"batches": 2},
        "warmup_lr": 0.01,  # flat and nested mix
    }
    config = SearchConfig.from_dict(nested)
    assert config == SearchConfig.from_dict(flat)
    assert config.search.steps == 7 and config.cost.name == "macs"
    assert config.dataset.options == {"count": 8} and config.to_dict()["data"] == {"count": 8}
    path = tmp_path / "nested.yaml"
    path.write_text("search:\n  steps: 7\n  mode: soft\ncost: {name: macs, budget: 0.5}\n")
    assert SearchConfig.load(path).to_dict()["search_steps"] == 7


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"search": {"stepz": 3}}, "unknown option(s) search.stepz (did you mean search.steps?)"),
        ({"warmup_stepz": 3}, "unknown option(s) warmup_stepz (did you mean warmup_steps?)"),
        ({"search": 3}, "search: expected a mapping of option: value"),
        ({"search_steps": 3, "search": {"steps": 4}}, "search_steps is given twice"),
        ({"search": {"mode": "sharp"}}, "search_mode='sharp'; expected one of hard, soft"),
        ({"cost": {"name": "macs", "budget": 2}}, "cost_budget is a fraction"),
    ],
    ids=["unknown-nested", "unknown-flat", "not-a-mapping", "twice", "literal", "check"],
)
def test_bad_nested_options_are_refused_by_their_full_name(options, message):
    with pytest.raises(ConfigError, match=re.escape(f"where: {message}")):
        SearchConfig.from_dict(options, "where")


def test_a_latency_budget_is_a_latency_cost_without_rewriting_cost():
    config = SearchConfig.from_dict({"latency_budget_ms": 2.0})
    assert config.cost.name is None and config.cost.model == "latency"
    stored = config.to_dict()
    assert stored["cost"] == "latency" and stored["latency_budget_ms"] == 2.0
    assert SearchConfig.from_dict(stored).to_dict() == stored  # config.json reads back
    assert config.with_options(latency_budget_ms=None).cost.model is None


def test_a_config_is_frozen_and_changed_through_checked_options():
    config = SearchConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.search.steps = 3
    changed = config.with_options(derive="conflict", search_steps=0)
    assert (changed.search.derive, changed.search.steps) == ("conflict", 0)
    assert config.search.steps == 150  # unchanged
    with pytest.raises(ConfigError, match=re.escape("config: search_steps must be an integer")):
        config.with_options(search_steps=-1)
    with pytest.raises(ConfigError, match="conflict_every between 1 and warmup_steps"):
        config.with_options(derive="conflict", conflict_every=0)


def test_the_documented_configs_load_flat_and_in_sections():
    """The configuration page's flat example and its example in sections load, and set the
    same options alike."""
    page = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    flat, nested = (
        yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", page, re.S)[:2]
    )
    assert SearchConfig.from_dict(flat).to_dict()["cost_budget"] == 0.5
    assert SearchConfig.from_dict(nested).search.steps == 150
    given = flatten(nested)
    assert given == {name: flat[name] for name in given}


def test_yaml_numbers_read_as_strings_are_numbers_and_wrong_types_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("warmup_lr: 1e-3\npost_train_lr: 2\nweight_lr: 1.0e-2\n")  # YAML 1.1: str
    config = SearchConfig.load(path)
    assert config.warmup.lr == 0.001 and isinstance(config.warmup.lr, float)
    assert config.post_train.lr == 2.0 and config.search.weight_lr == 0.01
    for options, message in [
        ({"warmup_lr": "fast"}, "warmup_lr='fast'; expected a number"),
        ({"batch_size": "32"}, "batch_size='32'; expected an integer"),
        ({"seed": 1.5}, "seed=1.5; expected an integer"),
        ({"per_task_steps": "yes"}, "per_task_steps='yes'; expected true or false"),
        ({"cost": 5}, "cost=5; expected a string"),
        ({"data": [1]}, "data=[1]; expected a mapping"),
        ({"eval_batches": 0}, "eval_batches must be >= 1"),
        ({"weight_lr": -0.1}, "weight_lr=-0.1; expected a number >= 0"),
        ({"weight_decay": "-1e-4"}, "weight_decay=-0.0001; expected a number >= 0"),
        ({"post_train_lr_step": 0}, "post_train_lr_step must be an integer >= 1"),
        ({"seed": -5}, "seed must be an integer >= 0"),
        ({"cost_weight": -1}, "cost_weight=-1.0; expected a number >= 0"),
        ({"device": "cuda:-1"}, "device='cuda:-1'; expected 'cpu', 'cuda' or 'cuda:N'"),
        ({"device": "cudax"}, "device='cudax'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            SearchConfig.from_dict(options)
