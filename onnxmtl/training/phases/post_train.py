"""`PostTrain`: the weights trained under one fixed policy (the derived or a baseline's), with
precise BatchNorm statistics for it: estimated after training, or before and held."""

from __future__ import annotations

import torch

from onnxmtl.training.batchnorm import hold_batchnorm
from onnxmtl.training.phases.phase import Optimizers, Phase


class PostTrain(Phase):
    """Adam on the weights for `post_train_steps`, the model following the session's policy,
    at `post_train_lr` decayed by `post_train_lr_schedule`: a cosine down to 0 after the last step
    (the final weights are then not one noisy step of a constant rate away from where the
    training settled) or halved every `post_train_lr_step` steps."""

    name = "post"
    title = "post-train"
    lr_option = "post_train_lr"

    def length(self) -> int:
        return self.run.config.post_train.steps

    def make_optimizers(self) -> Optimizers:
        c = self.run.config.post_train
        opt = torch.optim.Adam(self.run.weights(), lr=c.lr)
        scheduler: torch.optim.lr_scheduler.LRScheduler
        if c.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(self.length(), 1))
        else:
            scheduler = torch.optim.lr_scheduler.StepLR(opt, c.lr_step, gamma=0.5)
        return Optimizers(opt, scheduler=scheduler)

    @property
    def frozen(self) -> bool:
        """Whether the BatchNorm statistics are estimated before the first step and held."""
        return self.run.config.post_train.batchnorm == "frozen"

    def step(self) -> dict[str, float]:
        if self.frozen:
            if self.run.step == 0 and self.run.config.post_train.batchnorm_batches:
                self.recompute_batchnorm()
            hold_batchnorm(self.run.model)
        scheduler = self.optimizers.scheduler
        assert scheduler is not None  # make_optimizers gives post-training one
        lr = float(scheduler.get_last_lr()[0])
        record = self.run.weight_step(self.optimizers.weights, "train", "fixed")
        scheduler.step()
        return {**record, "lr": lr}

    def finish(self) -> None:
        held = self.frozen and self.length() > 0  # the statistics the weights were trained with
        if self.run.config.post_train.batchnorm_batches and not held:
            self.recompute_batchnorm()

    def recompute_batchnorm(self) -> None:
        """Precise BatchNorm statistics for the policy with the weights as they are, from
        batches of the training split in an order of their own."""
        run = self.run
        batches = run.config.post_train.batchnorm_batches
        with run.bar(batches, "batchnorm statistics") as bar:
            run.recompute_batchnorm(run.policy, "batchnorm", "train", batches, bar)
