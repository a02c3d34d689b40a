"""Parameter mixing: a soft search step that runs each unit once per task.

'soft' mode weighs a unit's three branches for each task by a Gumbel-softmax sample
(p_shared, p_own, p_skip). Mixing the branches' outputs (AutoMTL's relaxation) runs the
shared operators and the task's own copy on every task's input: twice the convolutions of
the single-task models, plus the skips. Mixing their parameters instead runs the unit once,
with p_shared * theta_shared + p_own * theta_own:

- for a unit linear in its parameters (an operator and its bias, or a normalisation alone)
  this is output mixing exactly;
- where a normalisation follows the operator, it normalises the mixture's pre-activation
  with the mixed affine parameters: the same as output mixing at every one-hot sample and
  while the two copies compute alike, and a relaxation of its own in between;
- a skip projection (a 1x1 convolution reading the centre tap of each of the unit's windows,
  then a BatchNorm) folds into a unit that is a convolution with odd kernels and a BatchNorm:
  its weights become p_skip times the centre tap of the mixed kernel, its norm's affine
  parameters join the mixed ones. Any other skip is run and added, weighted.

Normalising a mixture needs the batch's statistics, so parameter mixing is for training;
the search's soft steps are its use (`soft_mix: parameters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from onnxmtl.compiler.branches import Projection, UnitOps

SOFT_MIXES = ("outputs", "parameters")


@dataclass(frozen=True)
class SkipFold:
    """How a unit's skip projection folds into its convolution and normalisation: the names
    of the unit's parameters it adds to, the convolution's groups, how many of the
    projection's groups fall in each of them, and the kernel's centre tap."""

    conv: str
    norm_weight: str
    norm_bias: str
    groups: int
    ratio: int
    centre: tuple[int, ...]


def skip_fold(ops: nn.Module, skip: nn.Module | None) -> SkipFold | None:
    """The fold of `skip` into the unit `ops` (a `UnitOps`), or None where it does not fit:
    the unit must be one convolution reading no other weight, with odd kernels and integer
    padding, followed by an affine BatchNorm, and `skip` a `Projection` reading that
    convolution's centre taps, in groups that each lie within one of its groups."""
    if not isinstance(ops, UnitOps) or not isinstance(skip, Projection):
        return None
    proj, conv = skip.proj, ops.ops[0]
    if not isinstance(proj, _ConvNd) or not isinstance(conv, _ConvNd) or conv.transposed:
        return None
    if any(a != [("x", None)] for a in ops.args) or len(dict(ops.weights.named_buffers())):
        return None
    if any(True for _ in ops.weights.parameters()):
        return None
    norms = list(ops.ops[1:]) + ([ops.renorm] if ops.renorm is not None else [])
    if len(norms) != 1 or not isinstance(norms[0], _BatchNorm) or not norms[0].affine:
        return None
    if not isinstance(skip.norm, _BatchNorm) or not skip.norm.affine:
        return None
    if isinstance(conv.padding, str) or proj.stride != conv.stride:
        return None
    if any(k % 2 == 0 for k in conv.kernel_size) or proj.groups % conv.groups:
        return None
    centre = tuple((k - 1) // 2 for k in conv.kernel_size)
    reads = [c * d - p for c, d, p in zip(centre, conv.dilation, conv.padding)]
    starts = [s.start for s in skip.crop] if skip.crop else [0] * len(reads)
    if reads != starts:
        return None
    norm_name = "renorm" if ops.renorm is not None else f"ops.{len(ops.ops) - 1}"
    return SkipFold(
        conv="ops.0.weight",
        norm_weight=f"{norm_name}.weight",
        norm_bias=f"{norm_name}.bias",
        groups=conv.groups,
        ratio=proj.groups // conv.groups,
        centre=centre,
    )


def centre_kernel(fold: SkipFold, weight: torch.Tensor) -> torch.Tensor:
    """The projection's weight (C_out, C_in / its groups, 1, ...) as a kernel of the unit's
    convolution (C_out, C_in / groups, *kernel), zero but at the centre tap."""
    cout, cin_part = weight.shape[:2]
    g, r = fold.groups, fold.ratio
    # per convolution group, its r projection groups on the diagonal of a block matrix
    blocks = weight.reshape(g, r, cout // (g * r), cin_part).permute(0, 2, 3, 1)
    dense = torch.diag_embed(blocks).permute(0, 3, 1, 4, 2).reshape(cout, r * cin_part)
    taps = dense.reshape(cout, r * cin_part, *[1] * len(fold.centre))
    return F.pad(taps, [c for c in reversed(fold.centre) for _ in range(2)])


def mixed_parameters(
    shared: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    skip: Mapping[str, torch.Tensor] | None,
    fold: SkipFold | None,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A unit's parameters for one task, mixed by `weights` (p_shared, p_own, p_skip): the
    skip's folded in where `fold` is given (with `skip`, the projection's parameters)."""
    p_shared, p_own, p_skip = weights
    mixed = {n: torch.addcmul(p_shared * shared[n], p_own, p) for n, p in own.items()}
    if fold is not None:
        assert skip is not None
        kernel = centre_kernel(fold, skip["proj.weight"])
        mixed[fold.conv] = torch.addcmul(mixed[fold.conv], p_skip, kernel)
        for name, part in ((fold.norm_weight, "weight"), (fold.norm_bias, "bias")):
            mixed[name] = torch.addcmul(mixed[name], p_skip, skip[f"norm.{part}"])
    return mixed
