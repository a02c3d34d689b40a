"""The three branches of a unit: its operators (shared or per task), and a skip."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from onnxmtl.ir import Unit

Arg = tuple[str, object]  # ("x", None): the chain value; ("w", name): a weight of the unit


class Renorm(_BatchNorm):
    """A BatchNorm re-inserted after a unit whose normalisation was folded away.

    `calibrate` mode records the statistics of a batch and passes it through, so that the
    unit computes exactly the same function afterwards, in train mode on that batch and in
    eval mode on any input (gamma = sqrt(var + eps), beta = mean).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.calibrating = False

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"Renorm expects (N, C, ...) input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.calibrating:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x.detach().float(), dim=dims, correction=0)
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.weight.copy_(torch.sqrt(var + self.eps))
            self.bias.copy_(mean)
        return x


class UnitOps(nn.Module):
    """A unit's operators in a chain (Conv -> bias Add -> norm), with the weights they read."""

    def __init__(
        self,
        ops: Sequence[nn.Module],
        args: Sequence[Sequence[Arg]],
        weights: dict[str, torch.Tensor],
        trainable: set[str],
        renorm: Renorm | None = None,
    ) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.weights = nn.Module()
        for name, tensor in weights.items():
            if name in trainable:
                self.weights.register_parameter(name, nn.Parameter(tensor))
            else:
                self.weights.register_buffer(name, tensor)
        self.args = [list(a) for a in args]
        self.renorm = renorm

    @torch.no_grad()
    def standardize(self) -> None:
        """After calibration: scale the convolution so each output channel has unit variance
        on the calibration batch, moving the scale into the Renorm (the function is unchanged).

        Folding multiplied each filter by gamma / std; under a BatchNorm the step size of a
        filter goes as 1 / |filter|^2, so without this a folded backbone trains with very
        uneven effective learning rates."""
        conv, r = self.ops[0], self.renorm
        if r is None or type(conv) not in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            return
        var = r.running_var
        k = torch.where(var > 1e-6, torch.rsqrt(var + r.eps), torch.ones_like(var))
        conv.weight.mul_(k.view(-1, *[1] * (conv.weight.dim() - 1)))
        if conv.bias is not None:
            conv.bias.mul_(k)
        for w in self.weights.parameters():
            if w.numel() == k.numel():
                w.mul_(k.view(w.shape))
        mean = r.running_mean.clone()
        r.running_mean.mul_(k)
        r.running_var.mul_(k * k)
        r.weight.copy_(torch.sqrt(r.running_var + r.eps) / k)
        r.bias.copy_(mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op, args in zip(self.ops, self.args):
            x = op(*[x if kind == "x" else getattr(self.weights, name) for kind, name in args])
        return x if self.renorm is None else self.renorm(x)


@dataclass(frozen=True)
class ConvGeometry:
    """Where a Conv unit samples its input: strides, groups, and the offset of the centre tap
    of its first window in each spatial dim (negative where padding puts it outside)."""

    strides: tuple[int, ...]
    groups: int
    offsets: tuple[int, ...]


class Projection(nn.Module):
    """The skip of a unit that changes shape: a 1x1 projection with the unit's stride reading
    the centre tap of each of the unit's windows, then a normalisation (BatchNorm over
    channels, or a Linear and LayerNorm for features in the last dim)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: Sequence[int] | None,
        groups: int = 1,
        crop: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.channels_last = stride is None
        self.crop = [slice(a, b) for a, b in crop] if crop else None
        if self.channels_last:
            self.proj = nn.Linear(cin, cout, bias=False)
            self.norm = nn.LayerNorm(cout)
        else:
            conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[len(stride) - 1]
            bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[len(stride) - 1]
            self.proj = conv(cin, cout, 1, stride=tuple(stride), groups=groups, bias=False)
            self.norm = bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:
            x = x[(..., *self.crop)]
        return self.norm(self.proj(x))


def make_skip(unit: Unit, conv: ConvGeometry | None) -> nn.Module | None:
    """Identity where the unit keeps its shape; a projection where one reaches the output
    shape (grouped like the unit's convolution, so a depthwise unit gets a cheap depthwise
    projection); None where none fits (for example an upsampling ConvTranspose)."""
    if unit.keeps_shape:
        return nn.Identity()
    a, b = unit.in_shape, unit.out_shape
    if a is None or b is None or len(a) != len(b) or len(a) < 2:
        return None
    if unit.op_type == "Conv" and conv is not None and len(a) >= 3:
        cin, cout = a[1], b[1]
        dims = list(zip(a[2:], b[2:], conv.strides, conv.offsets, strict=True))
        fits = all(
            isinstance(i, int) and isinstance(o, int) and off >= 0 and off + (o - 1) * s < i
            for i, o, s, off in dims
        )
        if not (fits and isinstance(cin, int) and isinstance(cout, int)):
            return None
        crop = [(off, off + (o - 1) * s + 1) for i, o, s, off in dims]
        whole = all(off == 0 and (i - 1) // s + 1 == o for i, o, s, off in dims)
        groups = conv.groups if cin % conv.groups == cout % conv.groups == 0 else 1
        return Projection(cin, cout, conv.strides, groups, None if whole else crop)
    linear = unit.op_type in ("Gemm", "MatMul") and a[:-1] == b[:-1]
    if linear and isinstance(a[-1], int) and isinstance(b[-1], int):
        return Projection(a[-1], b[-1], None)
    return None


def skip_cost(unit: Unit, skip: nn.Module | None) -> tuple[int, int]:
    """(parameters, MACs per sample) of a skip branch."""
    if not isinstance(skip, Projection):
        return 0, 0
    params = sum(p.numel() for p in skip.parameters())
    out = math.prod(d for d in unit.out_shape[1:] if isinstance(d, int))
    if skip.channels_last:
        fan_in = skip.proj.in_features
    else:
        fan_in = skip.proj.in_channels // skip.proj.groups
    return params, out * fan_in + out


class UnitBranches(nn.Module):
    """Everything one unit offers: the shared operators, one copy per task, and a skip."""

    def __init__(self, shared: UnitOps, num_tasks: int, skip: nn.Module | None) -> None:
        super().__init__()
        self.shared = shared
        self.specific = nn.ModuleList(copy.deepcopy(shared) for _ in range(num_tasks))
        self.skip = skip

    def refresh_copies(self) -> None:
        """Re-initialise every task copy from the shared branch (after calibration)."""
        for branch in self.specific:
            branch.load_state_dict(self.shared.state_dict())
