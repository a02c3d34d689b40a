"""Every registry refuses a second registration of a name unless asked to replace it."""

from __future__ import annotations

import pytest
from torch import nn

from onnxmtl.cost import COSTS, register_cost
from onnxmtl.data import DATASETS, register_dataset
from onnxmtl.errors import ConfigError
from onnxmtl.lower import registry
from onnxmtl.tasks import HEADS, register_head
from onnxmtl.training import register_weighting
from onnxmtl.training.weighting import WEIGHTINGS


def _converter(node, graph):
    raise AssertionError("never lowered here")


def test_a_converter_registered_twice_is_refused_unless_overridden():
    key = ("com.example", "Twice", 1)
    try:
        registry.register_converter("Twice", 1, domain="com.example")(_converter)
        with pytest.raises(ConfigError) as caught:
            registry.register_converter("Twice", 1, domain="com.example")(_converter)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith("converter for Twice (opset 1) ") and "override=True" in message
        replacement = registry.register_converter("Twice", 1, domain="com.example", override=True)
        assert replacement(len) is len and registry._REGISTRY[key] is len
    finally:
        registry._REGISTRY.pop(key, None)


def test_onnxmtls_own_converters_are_refused_too():
    import onnxmtl.lower.ops  # noqa: F401  (registers onnxmtl's converters)

    key = ("", "Resize", 13)
    ours = registry._REGISTRY[key]
    with pytest.raises(ConfigError, match=r"converter for Resize \(opset 13\)"):
        registry.register_converter("Resize", 13)(_converter)
    assert registry._REGISTRY[key] is ours


@pytest.mark.parametrize(
    ("register", "table", "taken"),
    [
        (register_head, HEADS, "conv"),
        (register_dataset, DATASETS, "scenes"),
        (register_cost, COSTS, "params"),
        (register_weighting, WEIGHTINGS, "uncertainty"),
    ],
)
def test_built_in_names_are_not_silently_replaced(register, table, taken):
    before = table[taken]
    with pytest.raises(ConfigError, match=f"'{taken}' is registered already"):
        register(taken, nn.Identity)
    assert table[taken] is before
    register(taken, nn.Identity, override=True)
    try:
        assert table[taken] is nn.Identity
    finally:
        table[taken] = before
