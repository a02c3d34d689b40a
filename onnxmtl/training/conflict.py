"""Gradient conflict between tasks on each unit's shared weights (RECON, Shi et al., ICLR
2023), measured during warm-up: a prior for the search and a sharing policy of its own."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any, get_args

import torch

from onnxmtl.compiler import SHARED, SPECIFIC, Policy, SuperModel
from onnxmtl.errors import ConfigError
from onnxmtl.io_utils import atomic_write_text
from onnxmtl.training import distributed
from onnxmtl.training.config.sections import ConflictScore

SCORES: tuple[str, ...] = get_args(ConflictScore)


class ConflictMeter:
    """Per unit, how often two tasks' gradients on the unit's shared branch point apart (the
    cosine of the two gradients below `threshold`) and their mean cosine, over the measured
    warm-up steps and the pairs of tasks. In warm-up every branch is averaged, so every task's
    loss reaches every shared branch. `score` says which of the two ranks the units: 'share'
    (RECON's count) or 'cosine' (the mean, which separates units that the same few
    measurements give the same share)."""

    def __init__(
        self, model: SuperModel, threshold: float = 0.0, score: ConflictScore = "share"
    ) -> None:
        if score not in SCORES:
            raise ConfigError(f"conflict_score must be one of {', '.join(SCORES)}, got {score!r}.")
        self.threshold = threshold
        self.score = score
        self.unit_names = model.unit_names
        self.params = [
            [p for p in model.unit_branches(u).shared.parameters() if p.requires_grad]
            for u in range(len(model.units))
        ]
        units = len(self.params)
        self.conflicts = torch.zeros(units, dtype=torch.float64)  # summed share of pairs
        self.cosine = torch.zeros(units, dtype=torch.float64)  # summed mean cosine of the pairs
        self.measurements = 0

    def measure(self, task_losses: torch.Tensor, scale: float = 1.0) -> None:
        """Add one measurement: one backward pass per task, restricted to the shared branches'
        parameters, through the graph the losses came from (kept for the training step).
        `scale` multiplies the losses (a GradScaler's; cosines do not depend on it). Units
        without trainable weights score 0. Under torchrun each process measures its share of
        the batch and the results are averaged."""
        if len(task_losses) < 2:
            return
        per_task = [self._unit_gradients(loss * scale) for loss in task_losses]
        conflicts, cosines = [], []
        for u, unit in enumerate(self.params):
            cos = pair_cosines(torch.stack([grads[u] for grads in per_task]))
            conflicts.append(float((cos < self.threshold).double().mean()) if unit else 0.0)
            cosines.append(float(cos.double().mean()) if unit else 0.0)
        device = task_losses.device
        self.conflicts += torch.tensor(distributed.mean(conflicts, device), dtype=torch.float64)
        self.cosine += torch.tensor(distributed.mean(cosines, device), dtype=torch.float64)
        self.measurements += 1

    def _unit_gradients(self, loss: torch.Tensor) -> list[torch.Tensor]:
        """Per unit, the gradient of `loss` on its shared branch's parameters, flattened."""
        params = [p for unit in self.params for p in unit]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        flat = [
            (torch.zeros_like(p) if g is None else g).detach().float().reshape(-1)
            for p, g in zip(params, grads)
        ]
        vectors, start = [], 0
        for unit in self.params:
            vectors.append(torch.cat(flat[start : start + len(unit)]) if unit else torch.zeros(1))
            start += len(unit)
        return vectors

    def scores(self) -> torch.Tensor:
        """(units,): the share of measured (step, task pair)s in which the unit's shared
        weights received conflicting gradients, in [0, 1]."""
        return self.conflicts / max(self.measurements, 1)

    def mean_cosine(self) -> torch.Tensor:
        """(units,): the tasks' gradients' mean pairwise cosine on the unit's shared weights."""
        return self.cosine / max(self.measurements, 1)

    def unit_scores(self) -> torch.Tensor:
        """(units,): the score that ranks the units, higher where the tasks conflict more: the
        share of conflicting pairs, or the negated mean cosine."""
        return self.scores() if self.score == "share" else -self.mean_cosine()

    def ranking(self) -> list[int]:
        """Unit indices, most conflicting first by `score` (ties: by the other measure)."""
        share, apart = self.scores().tolist(), (-self.mean_cosine()).tolist()
        first, second = (share, apart) if self.score == "share" else (apart, share)
        return sorted(range(len(share)), key=lambda u: (-first[u], -second[u], u))

    def state_dict(self) -> dict[str, Any]:
        return {
            "conflicts": self.conflicts.clone(),
            "cosine": self.cosine.clone(),
            "measurements": self.measurements,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.conflicts = state["conflicts"].clone()
        self.cosine = state["cosine"].clone()
        self.measurements = state["measurements"]

    def to_json(self, path: Path) -> None:
        """conflict.json: per unit (input to output) its score and mean cosine, and the
        measurement's settings."""
        info = {
            "threshold": self.threshold,
            "score": self.score,
            "measurements": self.measurements,
            "units": self.unit_names,
            "scores": self.scores().tolist(),
            "mean_cosine": self.mean_cosine().tolist(),
            "ranking": [self.unit_names[u] for u in self.ranking()],
        }
        atomic_write_text(path, json.dumps(info, indent=1))


def pair_cosines(vectors: torch.Tensor) -> torch.Tensor:
    """The cosine of every pair of rows of `vectors` (tasks, n); 0 for a zero row."""
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gram = unit @ unit.T
    return torch.stack([gram[a, b] for a, b in combinations(range(len(vectors)), 2)])


@torch.no_grad()
def init_from_conflict(model: SuperModel, scores: torch.Tensor, strength: float) -> None:
    """Set every task's task-specific logit of each unit to `strength` times the unit's
    conflict score rescaled to [0, 1] over the units (the most conflicting unit gets
    `strength`, the least 0); the other logits keep their values."""
    low, high = scores.min(), scores.max()
    rescaled = (scores - low) / (high - low) if high > low else torch.zeros_like(scores)
    model.policy_logits[:, :, SPECIFIC] = strength * rescaled.to(model.policy_logits)


def conflict_policy(model: SuperModel, ranking: list[int], share: float) -> Policy:
    """Every task takes its own copy of the K first units of `ranking` (most conflicting
    first; units that may only be shared are passed over) and shares every other unit, with
    K the most units that hold at most `share` of the parameters of all the units together
    (a share of the backbone, so that it means the same whatever the heads and the number of
    tasks)."""
    params = [
        sum(p.numel() for p in model.unit_branches(u).shared.parameters())
        for u in range(len(model.units))
    ]
    limit = share * sum(params)
    chosen: set[int] = set()
    for u in (u for u in ranking if model.branch_mask[u, SPECIFIC]):
        if sum(params[v] for v in chosen) + params[u] > limit:
            break
        chosen.add(u)
    choices = [
        [SPECIFIC if u in chosen else SHARED for u in range(len(params))] for _ in model.tasks
    ]
    return Policy(model.task_names, model.unit_names, choices, method="conflict")
