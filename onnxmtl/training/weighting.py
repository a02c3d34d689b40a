"""Task loss weighting: equal, uncertainty (Kendall et al., 2018) and DWA (Liu et al., 2019)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from onnxmtl.errors import ConfigError
from onnxmtl.registry import add
from onnxmtl.tasks import Task


class Weighting(nn.Module):
    """Combines per-task losses into one objective; state lives in buffers or parameters so
    that checkpoints capture it."""

    static: torch.Tensor  # (tasks,) the tasks' static weights, a buffer

    def __init__(self, tasks: list[Task]) -> None:
        super().__init__()
        self.register_buffer("static", torch.tensor([t.weight for t in tasks]))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """`losses`: (tasks,) in task order."""
        return (self.static * losses).sum()

    def weights(self) -> list[float]:
        return self.static.tolist()


class Uncertainty(Weighting):
    """L = sum_t w_t (L_t / (2 exp(s_t)) + s_t / 2), with a learnt log-variance s_t per task."""

    def __init__(self, tasks: list[Task]) -> None:
        super().__init__(tasks)
        self.log_var = nn.Parameter(torch.zeros(len(tasks)))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        terms = losses / (2 * self.log_var.exp()) + self.log_var / 2
        return (self.static * terms).sum()

    def weights(self) -> list[float]:
        return (self.static / (2 * self.log_var.detach().exp())).tolist()


class DWA(Weighting):
    """Dynamic weight average: w_t = T softmax_t(r_t / temperature), r_t the ratio of task t's
    mean loss over the last two windows of `window` steps (equal weights for the first two)."""

    # buffers: the mean losses being summed, of the last window and of the one before; the
    # steps summed so far
    current: torch.Tensor
    previous: torch.Tensor
    before: torch.Tensor
    count: torch.Tensor

    def __init__(self, tasks: list[Task], temperature: float = 2.0, window: int = 20) -> None:
        super().__init__(tasks)
        self.temperature = temperature
        self.window = window
        n = len(tasks)
        self.register_buffer("current", torch.zeros(n))
        self.register_buffer("previous", torch.zeros(n))
        self.register_buffer("before", torch.zeros(n))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def dynamic(self) -> torch.Tensor:
        if (self.before == 0).any():
            return torch.ones_like(self.static)
        ratio = self.previous / self.before
        return len(ratio) * torch.softmax(ratio / self.temperature, dim=0)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        weights = self.dynamic()
        if self.training:
            with torch.no_grad():
                self.current += losses.detach()
                self.count += 1
                if int(self.count) == self.window:
                    self.before.copy_(self.previous)
                    self.previous.copy_(self.current / self.window)
                    self.current.zero_()
                    self.count.zero_()
        return (self.static * weights * losses).sum()

    def weights(self) -> list[float]:
        return (self.static * self.dynamic()).tolist()


# name -> factory(tasks, DWA temperature, DWA window); `register_weighting` adds one.
WEIGHTINGS: dict[str, Callable[[list[Task], float, int], Weighting]] = {
    "equal": lambda tasks, temperature, window: Weighting(tasks),
    "uncertainty": lambda tasks, temperature, window: Uncertainty(tasks),
    "dwa": DWA,
}


def register_weighting(
    name: str,
    factory: Callable[[list[Task], float, int], Weighting],
    override: bool = False,
) -> None:
    """Make `weighting: NAME` in a config build `factory(tasks, dwa_temperature, dwa_window)`
    (a name registered already is refused unless `override`)."""
    add(WEIGHTINGS, name, factory, "weighting", override)


def make_weighting(name: str, tasks: list[Task], temperature: float, window: int) -> Weighting:
    """The weighting registered as `name`; an unknown name is a configuration error."""
    if name not in WEIGHTINGS:
        raise ConfigError(
            f"config: weighting={name!r}; expected one of {', '.join(WEIGHTINGS)} (or one added "
            "with onnxmtl.training.register_weighting)."
        )
    return WEIGHTINGS[name](tasks, temperature, window)
