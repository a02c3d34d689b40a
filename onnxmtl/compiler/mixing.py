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
  its weights become the centre tap of the mixed kernel, its norm's affine parameters join
  the mixed ones, and each branch's kernel is scaled by the inverse of its output's spread,
  so that the BatchNorm weighs the three branches as output mixing weighs their normalised
  outputs (`folded_unit`). Any other skip is run and added, weighted.

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
    """How a unit's skip projection folds into its convolution: the path of the unit's
    BatchNorm, the convolution's groups, how many of the projection's groups fall in each of
    them, and the kernel's centre tap."""

    norm: str
    groups: int
    ratio: int
    centre: tuple[int, ...]


def skip_fold(ops: nn.Module, skip: nn.Module | None) -> SkipFold | None:
    """The fold of `skip` into the unit `ops` (a `UnitOps`), or None where it does not fit:
    the unit must be one zero-padded convolution reading no other weight, with odd kernels,
    followed by an affine BatchNorm, and `skip` a `Projection` reading that convolution's
    centre taps, in groups that each lie within one of its groups."""
    if not isinstance(ops, UnitOps) or not isinstance(skip, Projection):
        return None
    proj, conv = skip.proj, ops.ops[0]
    if not isinstance(proj, _ConvNd) or not isinstance(conv, _ConvNd) or conv.transposed:
        return None
    if any(a != [("x", None)] for a in ops.args) or any(True for _ in ops.weights.children()):
        return None
    if dict(ops.weights.named_buffers()) or any(True for _ in ops.weights.parameters()):
        return None
    norms = list(ops.ops[1:]) + ([ops.renorm] if ops.renorm is not None else [])
    if len(norms) != 1:
        return None
    for norm in (norms[0], skip.norm):
        if not isinstance(norm, _BatchNorm) or not norm.affine or norm.running_var is None:
            return None
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return None
    if proj.stride != conv.stride or proj.groups % conv.groups:
        return None
    if any(k % 2 == 0 for k in conv.kernel_size):
        return None
    centre = tuple((k - 1) // 2 for k in conv.kernel_size)
    reads = [c * d - p for c, d, p in zip(centre, conv.dilation, conv.padding)]
    starts = [s.start for s in skip.crop] if skip.crop else [0] * len(reads)
    if reads != starts:
        return None
    return SkipFold(
        norm="renorm" if ops.renorm is not None else f"ops.{len(ops.ops) - 1}",
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
    weights: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A unit's parameters for one task, `own`'s and `shared`'s mixed by `weights`
    (p_shared, p_own)."""
    p_shared, p_own = weights
    return {n: torch.addcmul(p_shared * shared[n], p_own, p) for n, p in own.items()}


def _spread(norm: _BatchNorm, row: int | None) -> torch.Tensor:
    """The running standard deviation of the output `norm` normalises (its row `row` where
    it keeps one per task)."""
    var = norm.running_var
    assert var is not None  # skip_fold checked that each tracks its statistics
    if var.dim() == 2:  # a RunBatchNorm's rows (a task copy's single one)
        var = var[0 if row is None else row]
    return torch.sqrt(var + norm.eps)


def folded_unit(
    fold: SkipFold,
    shared: UnitOps,
    own: UnitOps,
    skip: Projection,
    task: int,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """Task `task`'s output of a unit whose skip folds in, mixed by `weights` (p_shared,
    p_own, p_skip): one convolution with the three branches' kernels, then one BatchNorm on
    the batch's statistics with the mixed affine parameters. Each kernel is divided by the
    running spread of its own branch's output (from warm-up: nothing here updates running
    statistics), so that the normalisation weighs the branches' normalised outputs by their
    p, as output mixing does, whatever the scale of their raw outputs; at a one-hot sample
    the unit is exactly the chosen branch."""
    norms: list[_BatchNorm] = []
    for norm in (shared.get_submodule(fold.norm), own.get_submodule(fold.norm), skip.norm):
        assert isinstance(norm, _BatchNorm)  # skip_fold checked them
        norms.append(norm)
    spreads = torch.stack([_spread(n, r) for n, r in zip(norms, (task, None, task))])
    p = torch.stack(weights).unsqueeze(1)  # (3, 1)
    # a common per-channel factor, which the normalisation removes: 1 at a one-hot sample
    mean_spread = (p.detach() * spreads).sum(0)
    scales = p * (mean_spread / spreads)  # (3, C_out)
    conv_s, conv_o = shared.ops[0], own.ops[0]
    assert isinstance(conv_s, _ConvNd) and isinstance(conv_o, _ConvNd)
    kernels = torch.stack([conv_s.weight, conv_o.weight, centre_kernel(fold, skip.proj.weight)])
    kernel = (scales.view(*scales.shape, *[1] * (kernels.dim() - 2)) * kernels).sum(0)
    bias = None
    if conv_o.bias is not None and conv_s.bias is not None:
        bias = scales[0] * conv_s.bias + scales[1] * conv_o.bias
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(fold.centre) - 1]
    z = conv(x, kernel, bias, conv_o.stride, conv_o.padding, conv_o.dilation, conv_o.groups)
    gamma = (p * torch.stack([n.weight for n in norms])).sum(0)
    beta = (p * torch.stack([n.bias for n in norms])).sum(0)
    return F.batch_norm(z, None, None, gamma, beta, True, 0.0, norms[1].eps)
