"""Precise BatchNorm: running statistics re-estimated with the final weights."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, forward: Callable[[], object], batches: int) -> list[str]:
    """Replace the running statistics of every BatchNorm that `forward()` reaches by their
    plain average over `batches` calls, the weights as they are now and every other module in
    eval mode (no dropout). Training leaves an exponential average over weights that kept
    moving; where a policy skips units, eval-mode outputs then drift from the trained ones
    through depth. BatchNorms `forward` never reaches keep their statistics, and so do the
    rows of a per-run BatchNorm (`RunBatchNorm`) that no run reached. Returns the names of
    those recomputed."""
    norms = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    }
    saved = {name: (copy.deepcopy(m.state_dict()), m.momentum) for name, m in norms.items()}
    was_training = model.training
    model.eval()
    for m in norms.values():
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
        m.train()
    try:
        for _ in range(batches):
            forward()
    except BaseException:
        for name, m in norms.items():
            m.load_state_dict(saved[name][0])
        raise
    finally:
        model.train(was_training)
        for name, m in norms.items():
            m.momentum = saved[name][1]
    done = []
    for name, m in norms.items():
        tracked = m.num_batches_tracked
        assert tracked is not None  # every BatchNorm in `norms` tracks running statistics
        reached = tracked > 0  # per row, for the BatchNorms of shared branches
        if bool(reached.any()):
            done.append(name)
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            getattr(m, key)[~reached] = saved[name][0][key][~reached]
    return done
