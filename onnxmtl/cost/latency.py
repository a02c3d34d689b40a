"""Measured latency as the search's cost: the latency table's milliseconds, a deadline in ms
(`latency_budget_ms`), the derived policy fitted to it, and latency.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from onnxmtl.compiler import SHARED, SPECIFIC, Policy, SuperModel
from onnxmtl.compiler.policy_cost import full_cost
from onnxmtl.cost.budget import fit_to_budget
from onnxmtl.cost.cache import latency_table
from onnxmtl.cost.table import LatencyTable
from onnxmtl.errors import ConfigError
from onnxmtl.io_utils import atomic_write_text
from onnxmtl.run_folder import RunFolder
from onnxmtl.training import SearchConfig, distributed


@dataclass
class LatencyCost:
    """A `CostModel` in predicted milliseconds. `budget_ms` is the deadline the derived
    policy is fitted to (None: only the soft `budget` of the regulariser); `reference_ms`
    holds the predictions a budget is judged against (all-shared, all-specific, fastest)."""

    table: LatencyTable
    unit: torch.Tensor
    skip: torch.Tensor
    ancestors: torch.Tensor | None
    base: float
    budget: float | None
    budget_ms: float | None
    reference_ms: dict[str, float]
    logged: str | None = "latency_ms"

    def fit(self, policy: Policy, logits: torch.Tensor) -> Policy:
        """The policy within `budget_ms` (`fit_to_budget`), its method marked '+budget'."""
        if self.budget_ms is None:
            return policy
        choices, _ = fit_to_budget(self.table, policy.choices, logits, self.budget_ms)
        return replace(policy, choices=choices, method=f"{policy.method}+budget")

    def write_report(self, run_dir: Path, policy: Policy, searched: Policy) -> None:
        """The run folder's cost report (latency.json): the budget, the derived policy's
        predicted latency (and the searched policy's, before it was fitted to the budget), and
        the table's setting (device, provider, batch, threads, calibration)."""
        table = self.table
        info = {
            "budget_ms": self.budget_ms,
            "predicted_ms": table.predict(policy.choices),
            "predicted_unfitted_ms": table.predict(searched.choices),
            "fitted_pairs": sum(
                a != b for x, y in zip(policy.choices, searched.choices) for a, b in zip(x, y)
            ),
            "all_shared_ms": self.reference_ms["all-shared"],
            "all_specific_ms": self.reference_ms["all-specific"],
            "fastest_ms": self.reference_ms["fastest"],
            **{k: getattr(table, k) for k in ("device", "providers", "batch", "threads", "key")},
            "calibration": table.calibration,
        }
        atomic_write_text(RunFolder(run_dir).cost_report, json.dumps(info, indent=1))


def latency_cost(model: SuperModel, config: SearchConfig, progress: bool = True) -> LatencyCost:
    """The latency cost of `model` as `config` sets it (provider, batch, threads, cache),
    from a table measured by rank 0 once per model and device (`latency_table`). A
    `latency_budget_ms` becomes the fraction of the all-specific model's predicted ms; one
    below the fastest model the backbone can give is a ConfigError."""
    c = config.cost
    table = distributed.from_main(
        lambda: latency_table(
            model, c.latency_provider, c.latency_batch, c.latency_threads, c.latency_cache, progress
        )
    )
    unit, skip = table.costs()
    reference = {
        "all-shared": table.predict(model.choices_of(model.uniform_policy(SHARED))),
        "all-specific": table.predict(model.choices_of(model.uniform_policy(SPECIFIC))),
        "fastest": table.fastest(model.branch_mask),
    }
    budget = c.budget
    if c.latency_budget_ms is not None:
        budget = c.latency_budget_ms / float(full_cost(unit, len(model.tasks), table.base_ms))
        if c.latency_budget_ms < reference["fastest"]:
            raise ConfigError(
                f"config: latency_budget_ms={c.latency_budget_ms:g} is below the fastest "
                f"model this backbone can give ({reference['fastest']:.3g} ms predicted on "
                f"{table.device}; all-shared {reference['all-shared']:.3g} ms); "
                "raise the budget."
            )
    return LatencyCost(
        table=table,
        unit=unit,
        skip=skip,
        ancestors=table.ancestor_matrix,
        base=table.base_ms,
        budget=budget,
        budget_ms=c.latency_budget_ms,
        reference_ms=reference,
    )
