"""`policy_from_logits`: the policy a search reads from its logits (argmax or a seeded
sample), which `derive` then turns into a model."""

from __future__ import annotations

import torch

from onnxmtl.compiler import Policy, SuperModel
from onnxmtl.errors import ConfigError


def policy_from_logits(model: SuperModel, method: str = "argmax", seed: int = 0) -> Policy:
    """One branch per (task, unit) from the policy logits: the most likely one, or a sample
    from their softmax with a recorded seed."""
    logits = model.masked_logits().detach().cpu()
    if method == "argmax":
        choices = logits.argmax(-1)
    elif method == "sample":
        gen = torch.Generator().manual_seed(seed)
        probs = torch.softmax(logits, -1)
        choices = torch.multinomial(probs.view(-1, 3), 1, generator=gen).view(probs.shape[:2])
    else:
        raise ConfigError(f"derive must be 'argmax' or 'sample', got {method!r}.")
    return Policy(
        model.task_names,
        model.unit_names,
        choices.tolist(),
        method=method,
        seed=seed if method == "sample" else None,
        logits=model.policy_logits.detach().cpu().tolist(),
    )
