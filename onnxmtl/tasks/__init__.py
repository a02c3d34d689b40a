"""Tasks: specs, default losses, standard metrics and heads."""

from onnxmtl.tasks.delta_m import DEFINITION as DELTA_M_DEFINITION
from onnxmtl.tasks.delta_m import delta_m, mean_metrics, task_deltas
from onnxmtl.tasks.heads import (
    HEADS,
    ASPPHead,
    ConvHead,
    DeepLabHead,
    LinearHead,
    head_factory,
    is_custom_head,
    make_head,
    reads_all_features,
    reads_early_map,
    register_head,
)
from onnxmtl.tasks.losses import LOSSES, loss_fn
from onnxmtl.tasks.metrics import HIGHER_IS_BETTER, Metric, format_metrics, make_metric
from onnxmtl.tasks.task import KINDS, HeadFactory, Task, check_tasks, load_tasks

__all__ = [
    "DELTA_M_DEFINITION",
    "ASPPHead",
    "ConvHead",
    "DeepLabHead",
    "HEADS",
    "HIGHER_IS_BETTER",
    "HeadFactory",
    "KINDS",
    "LOSSES",
    "LinearHead",
    "Metric",
    "Task",
    "check_tasks",
    "delta_m",
    "format_metrics",
    "head_factory",
    "is_custom_head",
    "load_tasks",
    "loss_fn",
    "make_head",
    "make_metric",
    "mean_metrics",
    "reads_all_features",
    "reads_early_map",
    "register_head",
    "task_deltas",
]
