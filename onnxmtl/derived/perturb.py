"""Weights nudged apart, for timing untrained models as trained ones run."""

from __future__ import annotations

import torch

from onnxmtl.compiler.branches import ModuleT


def perturb_weights(module: ModuleT, scale: float = 1e-3, seed: int = 0) -> ModuleT:
    """Scale every parameter by 1 + `scale` * noise, in place: task copies then differ as
    trained ones do, where identical copies would be merged by onnxruntime's
    common-subexpression elimination (for timing untrained models)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=gen).to(p))
    return module
