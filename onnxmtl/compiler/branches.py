"""The three branches of a unit: its operators (shared or per task), and a skip."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from onnxmtl.compiler.clone import clone_module
from onnxmtl.ir import Unit

# ("x", None): the chain value; ("w", name): a weight of the unit
Arg = tuple[Literal["x"], None] | tuple[Literal["w"], str]
ModuleT = TypeVar("ModuleT", bound=nn.Module)


class RunBatchNorm(_BatchNorm):
    """A BatchNorm that keeps running statistics per task ('rows'), sharing its affine weights.

    A shared branch runs once for each distinct input that reaches it (tasks that parted
    earlier bring different values), and one set of statistics would then normalise every run
    with a mixture of their distributions in eval mode. Before a run, the caller sets `rows`
    to the tasks it serves: training normalises with the batch's statistics and updates each
    of those rows; eval mode normalises with the first one (under a fixed policy every task of
    a run has seen the same inputs, so their rows agree). `rows` None means every row.
    """

    # always tracked (one row per task), where _BatchNorm's may be None
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self,
        num_features: int,
        num_rows: int = 1,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats=True)
        self.register_buffer("running_mean", torch.zeros(num_rows, num_features))
        self.register_buffer("running_var", torch.ones(num_rows, num_features))
        self.register_buffer("num_batches_tracked", torch.zeros(num_rows, dtype=torch.long))
        self.rows: Sequence[int] | None = None

    @classmethod
    def like(cls, norm: _BatchNorm, num_rows: int) -> RunBatchNorm:
        """A per-run copy of `norm` with `num_rows` rows, each holding `norm`'s statistics
        (its first row's, when it has rows already)."""
        if norm.running_mean is None:
            raise ValueError(f"{type(norm).__name__} tracks no running statistics to copy.")
        new = cls(norm.num_features, num_rows, norm.eps, norm.momentum, norm.affine)
        new.to(norm.running_mean.device).copy_from(norm, 0)
        return new

    def copy_from(self, norm: _BatchNorm, row: int) -> None:
        """`norm`'s affine weights, and its statistics of row `row` (or its only ones) in
        every row."""
        copy_norm(self, norm, row)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"{type(self).__name__} expects (N, C, ...) input, got {input.dim()}D")

    def _rows(self) -> list[int]:
        return list(range(len(self.running_mean))) if self.rows is None else list(self.rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        rows = self._rows()
        if not self.training:
            r = rows[0]
            return F.batch_norm(
                x,
                self.running_mean[r],
                self.running_var[r],
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
        # the batch's mean and unbiased variance come out of the one normalisation call:
        # with momentum 1 its "running" statistics are the batch's own
        stats = self.running_mean.new_zeros(2, x.shape[1])
        y = F.batch_norm(x, stats[0], stats[1], self.weight, self.bias, True, 1.0, self.eps)
        with torch.no_grad():
            mean, var = stats
            self.num_batches_tracked[rows] += 1
            if self.momentum is None:  # a cumulative average
                factor = 1.0 / self.num_batches_tracked[rows].unsqueeze(1).float()
            else:
                factor = torch.tensor(self.momentum, device=mean.device)
            self.running_mean[rows] = torch.lerp(
                self.running_mean[rows], mean.expand(len(rows), -1), factor
            )
            self.running_var[rows] = torch.lerp(
                self.running_var[rows], var.expand(len(rows), -1), factor
            )
        return y


@torch.no_grad()
def copy_norm(target: _BatchNorm, source: _BatchNorm, row: int) -> None:
    """`source`'s affine weights into `target`, and its statistics (of row `row` where
    `source` keeps rows) into `target`'s, in each of its rows where it keeps rows."""
    if target.affine:
        target.weight.copy_(source.weight)
        target.bias.copy_(source.bias)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        value = getattr(source, name)
        getattr(target, name).copy_(value[row] if isinstance(source, RunBatchNorm) else value)


class Renorm(RunBatchNorm):
    """A BatchNorm re-inserted after a unit whose normalisation was folded away.

    `calibrate` mode records the statistics of a batch and passes it through, so that the
    unit computes exactly the same function afterwards, in train mode on that batch and in
    eval mode on any input (gamma = sqrt(var + eps), beta = mean).
    """

    def __init__(self, channels: int, num_rows: int = 1, *args, **kwargs) -> None:
        super().__init__(channels, num_rows, *args, **kwargs)
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.calibrating:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x.detach().float(), dim=dims, correction=0)
        with torch.no_grad():
            self.running_mean[self._rows()] = mean
            self.running_var[self._rows()] = var
            self.weight.copy_(torch.sqrt(var + self.eps))
            self.bias.copy_(mean)
        return x


def per_run_statistics(module: ModuleT, num_rows: int) -> ModuleT:
    """`module` with every BatchNorm that tracks statistics replaced, in place, by a
    `RunBatchNorm` of `num_rows` rows holding the same weights and statistics."""
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and child.track_running_stats:
            kind = type(child) if isinstance(child, RunBatchNorm) else RunBatchNorm
            setattr(module, name, kind.like(child, num_rows))
        else:
            per_run_statistics(child, num_rows)
    return module


class RowBatchNorm(_BatchNorm):
    """One row of a `RunBatchNorm` as a plain BatchNorm of any rank, for tracing: exporters
    fold it into the operator before it as they fold any BatchNorm."""

    # built with track_running_stats (the default), so these are never None
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"RowBatchNorm expects (N, C, ...) input, got {input.dim()}D")


def one_row(module: nn.Module, row: int) -> nn.Module:
    """`module` with every `RunBatchNorm` replaced, in place, by a plain BatchNorm holding
    its weights and the statistics of task `row`."""
    for name, child in list(module.named_children()):
        if isinstance(child, RunBatchNorm):
            plain = RowBatchNorm(child.num_features, child.eps, child.momentum, child.affine)
            copy_norm(plain, child, row)
            plain.train(child.training)
            setattr(module, name, plain.to(child.running_mean.device))
        else:
            one_row(child, row)
    return module


def run_for(module: ModuleT, rows: Sequence[int] | None) -> ModuleT:
    """`module`, its per-run BatchNorms set to the statistics of the tasks `rows`."""
    for m in module.modules():
        if isinstance(m, RunBatchNorm):
            m.rows = rows
    return module


def weight_holder(weights: dict[str, torch.Tensor]) -> nn.Module:
    """A module holding copies of `weights` by name: nn.Parameters stay parameters (they
    train), other tensors become buffers."""
    holder = nn.Module()
    for name, tensor in weights.items():
        if isinstance(tensor, nn.Parameter):
            holder.register_parameter(name, nn.Parameter(tensor.detach().clone()))
        else:
            holder.register_buffer(name, tensor.detach().clone())
    return holder


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

    def forward(self, x: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """The chain on `x`; `rows`, where given, are the tasks whose statistics the shared
        branch's normalisations use for this run (see `run_for`)."""
        if rows is not None:
            run_for(self, rows)
        for op, args in zip(self.ops, self.args):
            x = op(*[x if a[0] == "x" else getattr(self.weights, a[1]) for a in args])
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
        self.proj: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d
        self.norm: nn.Module
        if stride is None:
            self.proj = nn.Linear(cin, cout, bias=False)
            self.norm = nn.LayerNorm(cout)
        else:
            conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[len(stride) - 1]
            bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[len(stride) - 1]
            # torch types stride per rank (tuple[int, int] for Conv2d); conv matches its length
            self.proj = conv(cin, cout, 1, stride=tuple(stride), groups=groups, bias=False)  # type: ignore[arg-type]
            self.norm = bn(cout)

    def forward(self, x: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """The projection of `x`; `rows` as for `UnitOps.forward`."""
        if rows is not None:
            run_for(self, rows)
        if self.crop:
            # a local: mypy misreads x[(..., *crop)] as 3.11-only syntax
            index: tuple[EllipsisType | slice, ...] = (..., *self.crop)
            x = x[index]
        return self.norm(self.proj(x))


def make_skip(
    unit: Unit, conv: ConvGeometry | None, projection: str = "grouped"
) -> nn.Module | None:
    """Identity where the unit keeps its shape; a projection where one reaches the output
    shape; None where none fits (for example an upsampling ConvTranspose).

    A 'grouped' projection uses gcd(C_in, C_out) groups, the cheapest 1x1 map that feeds
    every output channel (a depthwise one where the channels match), so skipping a unit
    always saves compute; 'full' is a dense 1x1 convolution, as in AutoMTL; 'none' gives
    no skip where the shape changes (only identity skips, as in AdaShare), so that a soft
    search step computes no projection."""
    if unit.keeps_shape:
        return nn.Identity()
    if projection == "none":
        return None
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
        sizes = [
            (i, o, s, off) for i, o, s, off in dims if isinstance(i, int) and isinstance(o, int)
        ]
        if not (fits and isinstance(cin, int) and isinstance(cout, int)):
            return None
        crop = [(off, off + (o - 1) * s + 1) for i, o, s, off in sizes]
        whole = all(off == 0 and (i - 1) // s + 1 == o for i, o, s, off in sizes)
        groups = math.gcd(cin, cout) if projection == "grouped" else 1
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
    out = math.prod(d for d in (unit.out_shape or ())[1:] if isinstance(d, int))
    if isinstance(skip.proj, nn.Linear):
        fan_in = skip.proj.in_features
    else:
        fan_in = skip.proj.in_channels // skip.proj.groups
    return params, out * fan_in + out


class UnitBranches(nn.Module):
    """Everything one unit offers: the shared operators, one copy per task, and a skip. The
    shared branch and the skip keep BatchNorm statistics per task (`RunBatchNorm`), since they
    run once per distinct input; a task's copy runs for that task alone."""

    def __init__(self, shared: UnitOps, num_tasks: int, skip: nn.Module | None) -> None:
        super().__init__()
        self.specific = nn.ModuleList(clone_module(shared) for _ in range(num_tasks))
        self.shared = per_run_statistics(shared, num_tasks)
        self.skip = None if skip is None else per_run_statistics(skip, num_tasks)
