"""Tasks: specs, default losses, standard metrics and heads."""

from onnxmtl.tasks.heads import ASPPHead, ConvHead, LinearHead, make_head
from onnxmtl.tasks.losses import LOSSES, loss_fn
from onnxmtl.tasks.metrics import HIGHER_IS_BETTER, Metric, make_metric
from onnxmtl.tasks.task import KINDS, Task, check_tasks, load_tasks

__all__ = [
    "ASPPHead",
    "ConvHead",
    "HIGHER_IS_BETTER",
    "KINDS",
    "LOSSES",
    "LinearHead",
    "Metric",
    "Task",
    "check_tasks",
    "load_tasks",
    "loss_fn",
    "make_head",
    "make_metric",
]
