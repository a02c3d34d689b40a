"""onnxruntime sessions with the best provider that loads here."""

from __future__ import annotations

import onnx
import onnxruntime as ort


def available_providers(prefer_cuda: bool = True) -> list[str]:
    """CUDA first where a CUDA device and its libraries load, the CPU always."""
    providers = ["CPUExecutionProvider"]
    if prefer_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            import torch

            if torch.cuda.is_available():
                providers.insert(0, "CUDAExecutionProvider")
        except ImportError:
            pass
    return providers


def session(
    model: onnx.ModelProto | str, providers: list[str] | None = None, threads: int = 0
) -> ort.InferenceSession:
    """An InferenceSession for `model` (a ModelProto or a path), quiet unless it fails."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=providers or available_providers())
