"""`DerivedModel`: the compact multi-task model a policy implies, as a torch.fx GraphModule."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import fx

from onnxmtl.compiler.policy import BRANCHES, Policy
from onnxmtl.tasks import Task


@dataclass(frozen=True)
class UnitBranch:
    """What a unit-branch module of a derived model is: the supermodel unit it comes from,
    its kind (one of `BRANCHES`), and for a task's own copy that task."""

    unit: int
    kind: str
    task: str | None = None

    @property
    def target(self) -> str:
        """Its qualified name in the derived model: `units.u3.shared`, `units.u3.skip`, or
        `units.u3.specific.depth` for task `depth`'s copy."""
        own = f"specific.{self.task}" if self.task is not None else self.kind
        return f"units.u{self.unit}.{own}"


class DerivedModel(fx.GraphModule):
    """A graph of operators: each unit is called once per group of tasks that took the same
    branch on the same value, skipped units are gone, unused branches are dropped. Calling it
    on an image batch returns every task's output keyed by task name; `print(model.code)`
    shows the forward as Python.

    `branches` says which unit, branch kind and task each unit-branch module stands for,
    `task_heads` names each task's head, and `sources` gives every module and weight the
    graph reads its qualified name in the supermodel, so that the model can be saved as a
    slice of the supermodel's state.
    """

    def __init__(
        self,
        root: dict[str, Any],
        graph: fx.Graph,
        tasks: Sequence[Task],
        policy: Policy,
        branches: dict[str, UnitBranch],
        task_heads: dict[str, str],
        sources: dict[str, str],
        input_shape: tuple = (),
    ) -> None:
        super().__init__(root, graph, class_name="DerivedModel")
        self.tasks = list(tasks)
        self.policy = policy
        self.branches = dict(branches)
        self.task_heads = dict(task_heads)
        self.sources = dict(sources)
        self.input_shape = tuple(input_shape)  # the backbone's (N, C, H, W); dims may be names

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __deepcopy__(self, memo: dict[int, Any]) -> DerivedModel:
        # GraphModule's copy rebuilds the module from its graph and drops plain attributes
        copied = super().__deepcopy__(memo)
        assert isinstance(copied, DerivedModel)
        for name in ("tasks", "policy", "branches", "task_heads", "sources", "input_shape"):
            setattr(copied, name, copy.deepcopy(getattr(self, name), memo))
        return copied

    def branch_calls(self) -> list[tuple[fx.Node, UnitBranch]]:
        """Every call of a unit branch in the graph, in order, with what it runs."""
        return [
            (node, self.branches[node.target])
            for node in self.graph.nodes
            if node.op == "call_module" and node.target in self.branches
        ]

    def branch_counts(self) -> dict[str, int]:
        """How many unit branch instances one forward runs, by branch kind."""
        counts = dict.fromkeys(BRANCHES, 0)
        for _, branch in self.branch_calls():
            counts[branch.kind] += 1
        return counts
