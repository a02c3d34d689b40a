"""Each unit cut out of the all-shared derived model with the operators after it: what one
run of a branch costs in context."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

from onnxmtl.derived import DerivedModel

BRANCH = "branch"  # the target of the unit's call in a segment's graph


class Segment:
    """One unit's call in the all-shared derived model followed by the parameter-free
    operators up to the next unit: what one run of that unit's branch costs in context
    (onnxruntime fuses a convolution with the activation after it, and a skipped unit leaves
    that activation to run on its own).

    `inputs` are the tensors it reads from earlier nodes, as computed on the sample image."""

    def __init__(
        self, derived: DerivedModel, nodes: list[fx.Node], values: dict[fx.Node, Any]
    ) -> None:
        self.derived, self.nodes = derived, nodes
        inside = set(nodes)
        read = [a for n in nodes for a in n.all_input_nodes if a not in inside]
        outside = list(dict.fromkeys(read))
        self._read = [n for n in outside if n.op != "get_attr" and _tensor(values[n])]
        self._consts = {n: values[n] for n in outside if n.op != "get_attr" and n not in self._read}
        self._weights = [n for n in outside if n.op == "get_attr"]
        later = [
            n
            for n in nodes
            if n.op != "get_attr" and _tensor(values[n]) and any(u not in inside for u in n.users)
        ]
        self._outputs = later or [nodes[-1]]
        self.inputs: list[torch.Tensor] = [values[n] for n in self._read]

    def module(self, branch: nn.Module) -> fx.GraphModule:
        """The segment as a module taking `inputs`, with `branch` in place of the unit's
        module."""
        graph = fx.Graph()
        env: dict[fx.Node, Any] = dict(self._consts)
        env.update({n: graph.placeholder(f"x{i}") for i, n in enumerate(self._read)})
        root: dict[str, Any] = {BRANCH: branch}
        for node in [*self._weights, *self.nodes]:
            copied = graph.node_copy(node, env.__getitem__)
            if node is self.nodes[0]:
                copied.target, copied.kwargs = BRANCH, {}
            elif node.op in ("call_module", "get_attr"):
                root[str(node.target)] = operator.attrgetter(str(node.target))(self.derived)
            env[node] = copied
        graph.output(tuple(env[n] for n in self._outputs))
        return fx.GraphModule(root, graph)


def segments(derived: DerivedModel, x: torch.Tensor) -> dict[int, Segment]:
    """Per unit, its segment of the all-shared derived model `derived` (one call per unit):
    from the unit's call to the next unit's, or to the first head's, with the values the
    model computes on the image batch `x`."""
    interpreter = fx.Interpreter(derived, garbage_collect_values=False)
    with torch.no_grad():
        interpreter.run(x)
    nodes = list(derived.graph.nodes)
    heads = set(derived.task_heads.values())
    end = next(i for i, n in enumerate(nodes) if n.op == "call_module" and n.target in heads)
    calls = derived.branch_calls()
    starts = [nodes.index(node) for node, _ in calls] + [end]
    return {
        branch.unit: Segment(derived, nodes[start:stop], interpreter.env)
        for (_, branch), start, stop in zip(calls, starts, starts[1:])
    }


def _tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)
