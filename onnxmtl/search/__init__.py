"""Search: train the supermodel's weights and policy, derive a policy, post-train it."""

from onnxmtl.search.config import SearchConfig, tau_at
from onnxmtl.search.evaluate import delta_m, evaluate
from onnxmtl.search.regularizers import cost_regularizer, expected_cost, sharing_regularizer
from onnxmtl.search.trainer import SearchResult, Trainer, derive_policy
from onnxmtl.search.weighting import DWA, Uncertainty, Weighting, make_weighting

__all__ = [
    "DWA",
    "SearchConfig",
    "SearchResult",
    "Trainer",
    "Uncertainty",
    "Weighting",
    "cost_regularizer",
    "delta_m",
    "derive_policy",
    "evaluate",
    "expected_cost",
    "make_weighting",
    "sharing_regularizer",
    "tau_at",
]
