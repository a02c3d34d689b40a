"""Enumerations that a command line offers before anything heavy is imported: each declared
once here, read by the code that acts on it and by the CLI's `choices`."""

from __future__ import annotations

RUNTIMES = ("onnxruntime", "openvino")  # what bench times the exported files in
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")  # OpenVINO's CPU inference precision hints
