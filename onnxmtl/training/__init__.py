"""Search: train the supermodel's weights and policy, derive a policy, post-train it."""

from onnxmtl.compiler.policy_cost import CostModel, cost_regularizer, expected_cost
from onnxmtl.training.batchnorm import recompute_batchnorm
from onnxmtl.training.config import SearchConfig, as_config, policy_lr_at, tau_at
from onnxmtl.training.evaluate import evaluate
from onnxmtl.training.read_logits import policy_from_logits
from onnxmtl.training.regularizers import conflict_weights, depth_weights, sharing_regularizer
from onnxmtl.training.result import SearchResult
from onnxmtl.training.trainer import Trainer
from onnxmtl.training.weighting import (
    DWA,
    Uncertainty,
    Weighting,
    make_weighting,
    register_weighting,
)

__all__ = [
    "DWA",
    "CostModel",
    "SearchConfig",
    "SearchResult",
    "Trainer",
    "Uncertainty",
    "Weighting",
    "as_config",
    "conflict_weights",
    "cost_regularizer",
    "depth_weights",
    "policy_from_logits",
    "evaluate",
    "expected_cost",
    "make_weighting",
    "register_weighting",
    "policy_lr_at",
    "recompute_batchnorm",
    "sharing_regularizer",
    "tau_at",
]
