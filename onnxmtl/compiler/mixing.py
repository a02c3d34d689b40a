"""Parameter mixing: a soft search step that runs each unit's operators once per task.

'soft' mode weighs a unit's three branches for each task by a Gumbel-softmax sample
(p_shared, p_own, p_skip). Mixing the branches' outputs (AutoMTL's relaxation) runs the
shared operators and the task's own copy on every task's input: twice the convolutions of
the single-task models, plus the skips. Mixing their parameters instead runs the task's copy
once, with p_shared * theta_shared + p_own * theta_own, and adds p_skip times the skip:

- for a unit linear in its parameters (an operator and its bias, or a normalisation alone)
  this is output mixing exactly;
- where a normalisation follows the operator, it normalises the mixture's pre-activation
  with the mixed affine parameters: the same as output mixing at every one-hot sample and
  while the two copies compute alike, and a relaxation of its own in between.

The skip is not folded into the mixed parameters: a projection's kernel placed at the centre
tap of the mixed kernel, weighted by p_skip or by its normalised share, changed which units
the search skips on fashion-locate (the README's "Parameter mixing"). Normalising a mixture
needs the batch's statistics, so parameter mixing is for training; the search's soft steps
are its use (`soft_mix: parameters`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def mixed_parameters(
    shared: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    weights: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A unit's parameters for one task, `own`'s and `shared`'s mixed by `weights`
    (p_shared, p_own)."""
    p_shared, p_own = weights
    return {n: torch.addcmul(p_shared * shared[n], p_own, p) for n, p in own.items()}
