"""The configuration of a run: `SearchConfig`, its frozen sections, and the schedules derived
from them."""

from onnxmtl.training.config.check import literal_fields
from onnxmtl.training.config.flat import FLAT, SECTIONS
from onnxmtl.training.config.schedules import policy_lr_at, search_progress, tau_at
from onnxmtl.training.config.search_config import SearchConfig, as_config
from onnxmtl.training.config.sections import (
    CostOptions,
    DatasetOptions,
    DeployOptions,
    DeriveMethod,
    EvaluationOptions,
    LatencyProvider,
    LogFormat,
    LossOptions,
    LrSchedule,
    PostTrainInit,
    PostTrainOptions,
    PostTrainSchedule,
    RuntimeOptions,
    SearchMode,
    SearchOptions,
    SearchUpdate,
    SelectOptions,
    SelectStart,
    SharingPrior,
    SkipProjection,
    SoftMix,
    WarmupOptions,
)

__all__ = [
    "FLAT",
    "SECTIONS",
    "CostOptions",
    "DatasetOptions",
    "DeployOptions",
    "DeriveMethod",
    "EvaluationOptions",
    "LatencyProvider",
    "LogFormat",
    "LossOptions",
    "LrSchedule",
    "PostTrainInit",
    "PostTrainOptions",
    "PostTrainSchedule",
    "RuntimeOptions",
    "SearchConfig",
    "SearchMode",
    "SearchUpdate",
    "SearchOptions",
    "SelectOptions",
    "SelectStart",
    "SharingPrior",
    "SkipProjection",
    "SoftMix",
    "WarmupOptions",
    "as_config",
    "literal_fields",
    "policy_lr_at",
    "search_progress",
    "tau_at",
]
