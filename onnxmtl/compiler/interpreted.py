"""What `SuperModel` keeps while it interprets the backbone graph: each node's value per task,
and when a value is read for the last time; the straight-through gate of 'hard' mode; and
the error for images of another size than the one compiled for."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from onnxmtl.errors import ShapeError, first_line
from onnxmtl.ir import Graph

Values = dict[fx.Node, list[torch.Tensor]]  # per backbone node, per task (while read later)


def for_task(arg: fx.node.Argument, vals: Values, t: int) -> Any:
    """`arg` with each node replaced by task `t`'s value of it."""
    return fx.map_arg(arg, lambda n: vals[n][t])


def last_uses(graph: fx.Graph) -> dict[fx.Node, list[fx.Node]]:
    """For each node, the nodes it is the last to read (their values can be dropped after it);
    the output node drops nothing."""
    last: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        for read in node.all_input_nodes:
            last[read] = node
    uses: dict[fx.Node, list[fx.Node]] = {
        n: [n] if not n.users and n.op != "output" else [] for n in graph.nodes
    }
    for read, node in last.items():
        if node.op != "output":
            uses[node].append(read)
    return uses


class Gate(torch.autograd.Function):
    """Straight-through gate: returns `x` unchanged; `gate` (value 0, a sum of p - p.detach())
    receives the gradient that y = x * (1 + gate) would give it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        gate_grad = (grad * x).sum() if ctx.needs_input_grad[1] else None
        return grad, gate_grad


def size_mismatch(graph: Graph, x: torch.Tensor, exc: RuntimeError) -> None:
    """Raise a ShapeError naming both sizes where `exc` met images `x` of another size than
    `graph` was compiled for (a valid-padded convolution's skip reads a crop fixed at that
    size); nothing where the sizes agree."""
    compiled, given = tuple(graph.input_shape[2:]), tuple(x.shape[2:])
    if x.dim() < 3 or given == compiled:
        return
    size = "x".join(str(d) for d in compiled)
    raise ShapeError(
        f"{graph.source}: the supermodel was compiled for {size} images and cannot run on "
        f"{'x'.join(str(d) for d in given)} ones ({first_line(exc)}); resize the "
        f"images to {size} (onnxmtl.training.evaluate.fit_input does), or load the backbone "
        "at that size (input_shape=...) and compile it again."
    ) from exc
