"""Parameter and MAC costs: the compiler's per-branch counts, known without measuring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from onnxmtl.compiler import Policy, SuperModel, branch_costs
from onnxmtl.cost.ancestors import ancestor_matrix, model_ancestors
from onnxmtl.training import SearchConfig


@dataclass
class CountedCost:
    """A cost counted per branch (a `CostModel`): the budget is `cost_budget`, a soft one
    (the regulariser's), so the derived policy is kept as it is and nothing is reported."""

    unit: torch.Tensor
    skip: torch.Tensor
    ancestors: torch.Tensor | None
    base: float = 0.0
    budget: float | None = None
    logged: str | None = None

    def fit(self, policy: Policy, logits: torch.Tensor) -> Policy:
        return policy

    def write_report(self, run_dir: Path, policy: Policy, searched: Policy) -> None:
        return None


def _counts(model: SuperModel, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, the `key` count ('params' or 'macs') of its branch and of its skip."""
    rows = branch_costs(model)
    unit = torch.tensor([float(r[key]) for r in rows])
    return unit, torch.tensor([float(r[f"skip_{key}"]) for r in rows])


def param_cost(model: SuperModel, config: SearchConfig, progress: bool = True) -> CountedCost:
    """Parameters: each copy a policy keeps counts once, however often it runs."""
    unit, skip = _counts(model, "params")
    return CountedCost(unit, skip, None, budget=config.cost.budget)


def mac_cost(model: SuperModel, config: SearchConfig, progress: bool = True) -> CountedCost:
    """MACs per sample: each run of a branch counts, as the derived model makes them."""
    unit, skip = _counts(model, "macs")
    ancestors = ancestor_matrix(model_ancestors(model))
    return CountedCost(unit, skip, ancestors, budget=config.cost.budget)
