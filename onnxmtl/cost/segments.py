"""Each unit cut out of the all-shared derived model with the operators after it: what one
run of a branch costs in context."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from onnxmtl.derived import DerivedModel


class Segment(nn.Module):
    """One branch of a unit followed by the parameter-free operators up to the next unit, cut
    out of the all-shared derived model: what one run of that branch costs in context
    (onnxruntime fuses a convolution with the activation after it, and a skipped unit leaves
    that activation to run on its own)."""

    def __init__(
        self,
        derived: DerivedModel,
        steps: list[Any],
        branch: nn.Module,
        inputs: list[int],
        consts: dict[int, Any],
        outputs: list[int],
    ) -> None:
        super().__init__()
        self.derived, self.branch = derived, branch
        self.steps, self.inputs, self.consts, self.outputs = steps, inputs, consts, outputs

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vals = {**self.consts, **dict(zip(self.inputs, xs))}
        self.derived.run_step(self.steps[0], vals, self.branch)
        for step in self.steps[1:]:
            self.derived.run_step(step, vals)
        return tuple(vals[s] for s in self.outputs)


def segments(
    derived: DerivedModel, vals: list[Any]
) -> dict[int, tuple[list[Any], list[int], dict[int, Any], list[int]]]:
    """Per unit: its steps in the all-shared derived model (the unit, then the operators up
    to the next unit), the tensor slots they read from outside, other values they read, and
    the slots read after them. `vals` are the model's values on one input (kept)."""
    starts = {
        i: int(derived.sources[step.module].split(".")[1])
        for i, step in enumerate(derived.steps)
        if step.kind == "op" and derived.sources.get(step.module, "").startswith("units.")
    }
    positions = sorted(starts)
    out = {}
    for k, i in enumerate(positions):
        end = positions[k + 1] if k + 1 < len(positions) else len(derived.steps)
        steps = derived.steps[i:end]
        made = {step.out for step in steps}
        read = list(dict.fromkeys(s for step in steps for s in step.slots if s not in made))
        later = {s for step in derived.steps[end:] for s in step.slots}
        later |= {s for row in derived.outputs for s in row}
        tensors = [s for s in read if isinstance(vals[s], torch.Tensor)]
        consts = {s: vals[s] for s in read if s not in tensors}
        outputs = [
            step.out
            for step in steps
            if step.out in later and isinstance(vals[step.out], torch.Tensor)
        ]
        out[starts[i]] = (steps, tensors, consts, outputs or [steps[-1].out])
    return out
