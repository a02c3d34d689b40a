"""SearchConfig: every option with a fixed set of values is typed as a Literal and refused,
with the allowed list, when it is given anything else."""

from __future__ import annotations

import re

import pytest

from onnxmtl.errors import ConfigError
from onnxmtl.training import SearchConfig
from onnxmtl.training.config import literal_fields

CHOICES = literal_fields(SearchConfig)


def test_every_string_option_with_fixed_values_is_a_literal():
    assert set(CHOICES) == {
        "precision",
        "search_mode",
        "policy_lr_schedule",
        "latency_provider",
        "derive",
        "post_train_init",
        "log_format",
    }
    defaults = SearchConfig()
    for name, allowed in CHOICES.items():
        assert getattr(defaults, name) in allowed


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_a_value_outside_a_literal_is_refused_with_the_allowed_list(name):
    allowed = CHOICES[name]
    for value in allowed:
        assert getattr(SearchConfig.from_dict({name: value}), name) == value
    message = f"config: {name}='nonsense'; expected one of {', '.join(allowed)}."
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchConfig.from_dict({name: "nonsense"})
