"""Mixed precision: bf16 autocast, or fp16 autocast with a gradient scaler, in one code path
(fp32 is the same path with both switched off)."""

from __future__ import annotations

import contextlib

import torch

from onnxmtl.choices import PRECISIONS
from onnxmtl.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' is bf16 on a CUDA device that supports it (fp16 on older ones) and fp32 on the
    CPU, where autocast rarely pays off; other names are kept."""
    if name not in PRECISIONS:
        raise ConfigError(f"config: precision={name!r}; expected one of {', '.join(PRECISIONS)}.")
    if name != "auto":
        return name
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class Precision:
    """Forward passes under autocast and optimiser steps through a GradScaler (enabled for
    fp16 only: bf16 keeps fp32's range)."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = resolve_precision(name, device)
        self.device_type = device.type
        self.dtype = _DTYPES.get(self.name)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step (skipped by the scaler when fp16 gradients overflowed) and adapt the scale."""
        self.scaler.step(optimizer)
        self.scaler.update()
