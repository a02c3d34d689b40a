"""What `SuperModel` keeps while it interprets the backbone graph: each node's value per task,
and when a value is read for the last time."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

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
