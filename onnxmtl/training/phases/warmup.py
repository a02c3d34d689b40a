"""`Warmup`: every branch trained together (their outputs averaged), measuring the tasks'
gradient conflict on the way."""

from __future__ import annotations

import torch

from onnxmtl.training.conflict import init_from_conflict
from onnxmtl.training.phases.phase import Optimizers, Phase


class Warmup(Phase):
    """Adam on the weights at `warmup_lr` for `warmup_steps`; every `conflict_every` steps the
    tasks' gradient conflict is measured, written to conflict.json at the end and, with
    `conflict_init`, used to initialise the policy logits."""

    name = "warmup"
    title = "warm-up"
    lr_option = "warmup_lr"

    def length(self) -> int:
        return self.run.config.warmup.steps

    def make_optimizers(self) -> Optimizers:
        return Optimizers(torch.optim.Adam(self.run.weights(), lr=self.run.config.warmup.lr))

    def step(self) -> dict[str, float]:
        run = self.run
        every = run.config.warmup.conflict_every
        measure = every > 0 and (run.step + 1) % every == 0
        return run.weight_step(self.optimizers.weights, "train", "warmup", measure=measure)

    def finish(self) -> None:
        run, c = self.run, self.run.config.search
        if not run.conflict.measurements:
            return
        if run.main:
            run.conflict.to_json(run.folder.conflict)
        if c.conflict_init:
            init_from_conflict(run.model, run.conflict.unit_scores(), c.conflict_strength)
