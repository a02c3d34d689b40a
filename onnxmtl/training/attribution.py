"""Which part of the policy loss moves the policy logits: the tasks' losses or a regulariser."""

from __future__ import annotations

import torch


def policy_gradients(
    task_loss: torch.Tensor,
    terms: dict[str, torch.Tensor],
    logits: torch.Tensor,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The gradient on `logits` of the task loss ('task') and of each weighted regulariser in
    `terms`, separately; their sum is the gradient of the whole policy loss. Only the logits'
    gradients are computed (the task part backpropagates through the network, the
    regularisers depend on the logits alone). The task loss is multiplied by `scale` (a
    GradScaler's, for fp16's range) for its backward pass and its gradient divided by it."""
    (task,) = torch.autograd.grad(task_loss * scale, logits)
    return {"task": task / scale, **regularizer_gradients(terms, logits)}


def regularizer_gradients(
    terms: dict[str, torch.Tensor], logits: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The gradient on `logits` of each weighted regulariser in `terms`, by name."""
    parts = {}
    for name, term in terms.items():
        (grad,) = torch.autograd.grad(term, logits, allow_unused=True)
        parts[name] = torch.zeros_like(logits) if grad is None else grad
    return parts


def attribution_record(parts: dict[str, torch.Tensor]) -> dict[str, float]:
    """Log fields of `policy_gradients`' parts: the L2 norm of each (`grad_task`,
    `grad_sharing`, ...) and `grad_task_share`, the task part's norm over the sum of all the
    norms (1: only the tasks move the policy; 0: only the regularisers)."""
    norms = {f"grad_{name}": float(part.detach().float().norm()) for name, part in parts.items()}
    total = sum(norms.values())
    norms["grad_task_share"] = norms["grad_task"] / total if total > 0 else 0.0
    return norms
