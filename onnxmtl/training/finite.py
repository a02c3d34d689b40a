"""Refusing what is not finite: a step's losses before it is logged, and weights before they
are saved, so that the last checkpoint always holds the run's last good state."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from onnxmtl.errors import TrainingError
from onnxmtl.tasks import Task

# the learning-rate option to blame for the losses named, and its value
Blame = Callable[[list[str]], tuple[str, float]]


def check_finite(record: dict[str, float], tasks: list[Task], where: str, blame: Blame) -> None:
    """A TrainingError at the first loss in `record` that is not finite, saying `where` (run
    folder, phase and step) and which learning rate may be too high (`blame` gives the
    option's name and value for the losses that are not finite)."""
    keys = [*(f"loss_{t.name}" for t in tasks), "loss", "policy_loss"]
    bad = [k for k in keys if k in record and not math.isfinite(record[k])]
    if not bad:
        return
    names = [k.removeprefix("loss_") for k in bad if k.startswith("loss_")]
    what = f"task {', '.join(repr(t) for t in names)}" if names else f"the {bad[0]}"
    option, value = blame(bad)
    raise TrainingError(
        f"{where}: the loss of {what} is {record[bad[0]]} (not finite); likely causes: "
        f"NaN/inf or out-of-range values in the data, or {option}={value:g} too high. Nothing "
        "was saved from this step; the last checkpoint is the last good state."
    )


def check_weights(model: torch.nn.Module, where: str) -> None:
    """A TrainingError if a weight or policy logit of `model` is not finite (`where` names
    the run folder, phase and step)."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise TrainingError(
                f"{where}: {name} holds NaN/inf values; not saved (the last checkpoint is the "
                "last good state). Lower the learning rates or check the data."
            )
