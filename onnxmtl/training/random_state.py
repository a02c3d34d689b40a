"""Every random generator a run draws from (torch, CUDA, NumPy, Python): seeding them, and
their state as checkpoints keep it."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed torch, NumPy and Python's generators with `seed`."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain data (what `weights_only` loads)."""
    state = np.random.get_state(legacy=True)
    if not isinstance(state, tuple):  # only a non-MT19937 global generator gives a dict
        raise TypeError("NumPy's global generator is not the legacy MT19937 one.")
    kind, keys, pos, has_gauss, gauss = state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from `rng_state`'s dict."""
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
