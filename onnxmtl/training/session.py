"""`Session`: what every phase of one run works with (the model, data streams, loss
weighting, precision, cost, the policy being post-trained, the step counters), and the
weight step all phases take."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from onnxmtl.compiler import Policy, SuperModel
from onnxmtl.compiler.policy_cost import CostModel
from onnxmtl.data import MultiTaskDataset
from onnxmtl.run_folder import RunFolder
from onnxmtl.tasks import Task, loss_fn
from onnxmtl.training import distributed
from onnxmtl.training.batchnorm import recompute_batchnorm
from onnxmtl.training.config import SearchConfig
from onnxmtl.training.conflict import ConflictMeter
from onnxmtl.training.evaluate import fit_input, fit_output
from onnxmtl.training.precision import Precision
from onnxmtl.training.stream import BatchStream
from onnxmtl.training.weighting import Weighting

STREAMS = ("train", "train1", "train2")  # warm-up and post-train; search weights; policy


@dataclass
class Session:
    """One run's shared state. `policy` is the policy post-training trains: the fixed one,
    or the one the search derives (None before). `step` counts the current phase's steps,
    `policy_steps` the search's policy steps (the temperature and learning-rate schedules
    follow them). Under torchrun every process holds its share of each batch (`rank` of
    `world`)."""

    model: SuperModel
    train_set: MultiTaskDataset
    config: SearchConfig
    folder: RunFolder
    device: torch.device
    rank: int
    world: int
    splits: dict[str, np.ndarray]
    weighting: Weighting
    precision: Precision
    conflict: ConflictMeter
    cost: CostModel | None
    policy: Policy | None
    progress: bool = True
    label: str = ""  # prefixes the progress bars' phase names
    step: int = 0
    policy_steps: int = 0

    def __post_init__(self) -> None:
        self.streams = {name: self.stream(name, name) for name in STREAMS}

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def tasks(self) -> list[Task]:
        return self.model.tasks

    def where(self, title: str, step: int) -> str:
        """The run folder, phase and step, as errors name them."""
        return f"{self.folder.path}: {title} step {step}"

    def stream(self, name: str, split: str) -> BatchStream:
        """Batches of `split` in the order named `name`, this process's share of each."""
        c = self.config
        return BatchStream(
            self.train_set,
            self.splits[split],
            c.dataset.batch_size,
            c.runtime.seed,
            name,
            self.rank,
            self.world,
        )

    def bar(self, total: int, what: str, initial: int = 0) -> tqdm:
        """A progress bar for `what`, shown by rank 0 only when progress is on."""
        return tqdm(
            total=total,
            initial=initial,
            desc=f"{self.label} {what}".strip(),
            disable=not (self.progress and self.main),
            leave=False,
            dynamic_ncols=True,
        )

    def weights(self) -> list[torch.nn.Parameter]:
        """What the weight optimisers train: the model's weights and the loss weighting's."""
        return self.model.weight_parameters() + list(self.weighting.parameters())

    def task_losses(self, images, targets, mode: str, tau: float | None = None) -> torch.Tensor:
        """Every task's loss on one batch, the model run in `mode` (at `tau`)."""
        images = images.to(self.device, non_blocking=True)
        targets = {k: v.to(self.device, non_blocking=True) for k, v in targets.items()}
        with self.precision.autocast():
            out = self.model(fit_input(images, self.model), mode=mode, tau=tau, policy=self.policy)
            losses = [
                loss_fn(t)(fit_output(out[t.name], targets[t.name], t), targets[t.name])
                for t in self.tasks
            ]
        return torch.stack(losses).float()

    def weight_step(
        self,
        optimizer: torch.optim.Optimizer,
        stream: str,
        mode: str,
        tau: float | None = None,
        per_task: bool = False,
        measure: bool = False,
    ) -> dict[str, float]:
        """One step of `optimizer` on a batch of `stream`: on the weighted sum of the task
        losses, or (`per_task`) one step per task on its own loss; `measure` records the
        tasks' gradient conflict on this batch. Returns the losses to log."""
        images, targets = self.streams[stream].next()
        optimizer.zero_grad(set_to_none=True)
        if per_task:
            losses = []
            for t in range(len(self.tasks)):
                optimizer.zero_grad(set_to_none=True)
                task_losses = self.task_losses(images, targets, mode, tau)
                self.precision.backward(self.weighting.static[t] * task_losses[t])
                self.optimizer_step(optimizer, self.weights())
                losses.append(task_losses[t].detach())
            task_losses = torch.stack(losses)
            total = float(task_losses.sum())
        else:
            task_losses = self.task_losses(images, targets, mode, tau)
            if measure:
                self.conflict.measure(task_losses, self.loss_scale())
            loss = self.weighting(task_losses)
            self.precision.backward(loss)
            self.optimizer_step(optimizer, self.weights())
            total = float(loss.detach())
        return self.loss_record(total, task_losses)

    def loss_record(self, total: float, task_losses: torch.Tensor) -> dict[str, float]:
        """The log fields of a weight update: its loss and each task's."""
        record = {"loss": total}
        record.update(
            {f"loss_{t.name}": float(v) for t, v in zip(self.tasks, task_losses.detach())}
        )
        return record

    def optimizer_step(self, optimizer: torch.optim.Optimizer, params: list) -> None:
        """One optimiser step on gradients averaged over the processes (under torchrun)."""
        distributed.average_gradients(params)
        self.precision.step(optimizer)
        distributed.average_buffers(self.model)

    def recompute_batchnorm(
        self, policy: Policy | None, name: str, split: str, batches: int, bar: tqdm | None = None
    ) -> None:
        """Precise BatchNorm statistics for `policy`, from `batches` batches of `split` in an
        order of their own (`name`); under torchrun each process measures its share and the
        statistics are averaged, so every process keeps the same model."""
        stream = self.stream(name, split)

        def forward() -> None:
            images = fit_input(stream.next()[0].to(self.device), self.model)
            with self.precision.autocast():
                self.model(images, mode="fixed", policy=policy)
            if bar is not None:
                bar.update(1)

        recompute_batchnorm(self.model, forward, batches)
        distributed.average_buffers(self.model)

    def loss_scale(self) -> float:
        """The gradient scaler's scale (1 unless fp16)."""
        scaler = self.precision.scaler
        return scaler.get_scale() if scaler.is_enabled() else 1.0
