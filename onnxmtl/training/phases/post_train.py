"""`PostTrain`: the weights trained under one fixed policy (the derived or a baseline's),
then precise BatchNorm statistics for it."""

from __future__ import annotations

import torch

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

    def step(self) -> dict[str, float]:
        scheduler = self.optimizers.scheduler
        assert scheduler is not None  # make_optimizers gives post-training one
        lr = float(scheduler.get_last_lr()[0])
        record = self.run.weight_step(self.optimizers.weights, "train", "fixed")
        scheduler.step()
        return {**record, "lr": lr}

    def finish(self) -> None:
        if self.run.config.post_train.batchnorm_batches:
            self.recompute_batchnorm()

    def recompute_batchnorm(self) -> None:
        """Precise BatchNorm statistics for the trained policy, from batches of the training
        split in an order of their own."""
        run = self.run
        batches = run.config.post_train.batchnorm_batches
        with run.bar(batches, "batchnorm statistics") as bar:
            run.recompute_batchnorm(run.policy, "batchnorm", "train", batches, bar)
