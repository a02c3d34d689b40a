"""`Phase`: one stretch of a run with its own optimisers and length, and `Optimizers`, what
a phase trains with and a checkpoint keeps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from onnxmtl.training.finite import check_finite
from onnxmtl.training.session import Session


@dataclass
class Optimizers:
    """A phase's optimiser of the weights, and where it has them, of the policy logits and a
    learning-rate schedule."""

    weights: torch.optim.Optimizer
    policy: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def state_dict(self) -> dict[str, Any]:
        """Their states under the checkpoint's keys."""
        return {
            "opt": self.weights.state_dict(),
            "policy_opt": None if self.policy is None else self.policy.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights.load_state_dict(state["opt"])
        if self.policy is not None:
            self.policy.load_state_dict(state["policy_opt"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


class Phase(ABC):
    """One phase of a run: `length` steps of `step`, with optimisers made by `begin`, then
    `finish`. `name` marks the phase in checkpoints and log rows, `title` in progress bars
    and errors; `lr_option` is the config option blamed when a loss is not finite."""

    name: ClassVar[str]
    title: ClassVar[str]
    lr_option: ClassVar[str]

    def __init__(self, run: Session) -> None:
        self.run = run
        self._optimizers: Optimizers | None = None

    @property
    def optimizers(self) -> Optimizers:
        """The optimisers `begin` made."""
        if self._optimizers is None:
            raise RuntimeError(f"{self.title}: the phase has not begun (call begin() first).")
        return self._optimizers

    @abstractmethod
    def length(self) -> int:
        """How many steps the phase takes."""

    @abstractmethod
    def make_optimizers(self) -> Optimizers:
        """Fresh optimisers for the phase."""

    @abstractmethod
    def step(self) -> dict[str, float]:
        """One training step; returns what to log."""

    def begin(self) -> None:
        """Make the phase's optimisers (before its first step, or before loading their state)."""
        self._optimizers = self.make_optimizers()

    @abstractmethod
    def finish(self) -> None:
        """What the phase does after its last step."""

    def blame(self, bad: list[str]) -> str:
        """The learning-rate option that may be too high when the losses `bad` are not finite."""
        return self.lr_option

    def check_finite(self, record: dict[str, float]) -> None:
        """Stop at the first loss that is not finite, before anything is saved (the last
        checkpoint, from before it, stays the run's last good state)."""
        run = self.run

        def blame(bad: list[str]) -> tuple[str, float]:
            option = self.blame(bad)
            return option, run.config.to_dict()[option]

        check_finite(record, run.tasks, run.where(self.title, run.step + 1), blame)
