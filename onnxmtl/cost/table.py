"""`LatencyTable`: measured milliseconds per unit, and the latency it predicts for a policy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import torch

from onnxmtl.compiler import SHARED, SKIP, SPECIFIC
from onnxmtl.compiler.policy_cost import expected_cost
from onnxmtl.cost.ancestors import ancestor_matrix

TABLE_VERSION = 7
CALIBRATION = {"all-shared": SHARED, "all-specific": SPECIFIC, "all-skip": SKIP}


@dataclass
class LatencyTable:
    """Milliseconds per run of each unit's operators (shared branch = one task copy) and of
    its skip, on one device and provider at one batch size. A derived model's latency is
    predicted as `base_ms + scale * sum(branch ms x runs) + skip_scale * sum(skip ms x
    runs)`, with the three coefficients fitted to the measured all-shared, all-specific and
    all-skip models (`CALIBRATION`): they absorb the operators before the first unit, the
    heads, per-call overhead, and what a unit costs in a whole graph rather than on its own
    (a skip breaks the chain of convolutions onnxruntime keeps in its blocked memory layout)."""

    key: str
    device: str
    providers: list[str]
    batch: int
    threads: int
    unit_ms: list[float]
    skip_ms: list[float]
    ancestors: list[list[int]]
    base_ms: float
    scale: float
    skip_scale: float
    calibration: dict[str, float]  # measured ms and summed unit/skip ms of the calibration models

    def costs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-unit (branch, skip) costs in ms, scaled, as the regulariser takes them."""
        unit = torch.tensor(self.unit_ms, dtype=torch.float64) * self.scale
        return unit, torch.tensor(self.skip_ms, dtype=torch.float64) * self.skip_scale

    @cached_property
    def ancestor_matrix(self) -> torch.Tensor:
        """`ancestors` as the (units, units) matrix the run counts take (built once)."""
        return ancestor_matrix(self.ancestors)

    def predict(self, choices: list[list[int]]) -> float:
        """Predicted ms of the derived model of a policy (tasks x units branch indices)."""
        probs = torch.nn.functional.one_hot(torch.tensor(choices), 3).double()
        unit, skip = self.costs()
        return self.base_ms + float(expected_cost(probs, unit, skip, self.ancestor_matrix))

    def fastest(self, allowed: torch.Tensor) -> float:
        """Predicted ms of the fastest policy the branch mask (units, 3) allows: every unit
        run once by all tasks, through its cheaper allowed branch."""
        unit, skip = self.costs()
        skip = torch.where(allowed[:, SKIP].cpu(), skip, torch.inf)
        cheapest = torch.where(allowed[:, SHARED].cpu(), unit, torch.inf).minimum(skip)
        return self.base_ms + float(cheapest.sum())

    def to_dict(self) -> dict[str, Any]:
        return {"version": TABLE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        data = dict(data)
        data.pop("version", None)
        return cls(**data)
