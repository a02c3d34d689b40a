"""Converters for what stock onnx2torch 1.5.15 lacks, one file per op family.

Importing this package registers them.
"""

from onnxmtl.lower.ops import (
    activations,
    legacy,
    norm,
    pad,
    pool,
    reduce,
    sequence,
    shape_ops,
    upsample,
)

__all__ = [
    "activations",
    "legacy",
    "norm",
    "pad",
    "pool",
    "reduce",
    "sequence",
    "shape_ops",
    "upsample",
]
