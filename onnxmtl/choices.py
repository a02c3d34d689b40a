"""Enumerations that a command line offers before anything heavy is imported: each declared
once here, read by the code that acts on it and by the CLI's `choices`."""

from __future__ import annotations

from typing import Literal, get_args

RUNTIMES = ("onnxruntime", "openvino")  # what bench times the exported files in
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")  # OpenVINO's CPU inference precision hints

# The skip of a unit that changes shape: a grouped 1x1 projection, a full one, or none
# (identity skips only).
SkipProjection = Literal["grouped", "full", "none"]
SKIP_PROJECTIONS: tuple[str, ...] = get_args(SkipProjection)
# Training precision: bf16 autocast on CUDA and fp32 on the CPU ('auto'), or one of them.
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
# How a soft search step mixes a unit's branches in training: their parameters or outputs.
SoftMix = Literal["outputs", "parameters"]
SOFT_MIXES: tuple[str, ...] = get_args(SoftMix)
