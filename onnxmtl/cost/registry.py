"""Cost models by name: `cost: NAME` in a config builds the one registered as NAME."""

from __future__ import annotations

from collections.abc import Callable

from onnxmtl.compiler import SuperModel
from onnxmtl.compiler.policy_cost import CostModel
from onnxmtl.cost.counted import mac_cost, param_cost
from onnxmtl.cost.latency import latency_cost
from onnxmtl.errors import ConfigError
from onnxmtl.registry import add
from onnxmtl.training import SearchConfig

CostFactory = Callable[[SuperModel, SearchConfig, bool], CostModel]

# name -> factory(model, config, progress); `register_cost` adds one.
COSTS: dict[str, CostFactory] = {
    "params": param_cost,
    "macs": mac_cost,
    "latency": latency_cost,
}


def register_cost(name: str, factory: CostFactory, override: bool = False) -> None:
    """Make `cost: NAME` in a config build `factory(model, config, progress)`, a `CostModel`
    of the supermodel (a name registered already is refused unless `override`)."""
    add(COSTS, name, factory, "cost", override)


def cost_factory(name: str) -> CostFactory:
    """The factory registered as `name`; an unknown name is a configuration error."""
    if name not in COSTS:
        raise ConfigError(
            f"config: cost={name!r}; expected one of {', '.join(COSTS)} (or one added with "
            "onnxmtl.cost.register_cost)."
        )
    return COSTS[name]


def make_cost(model: SuperModel, config: SearchConfig, progress: bool = True) -> CostModel | None:
    """The cost model `config.cost.model` names, of `model`, for its search; None without a
    cost."""
    if config.cost.model is None:
        return None
    return cost_factory(config.cost.model)(model, config, progress)
