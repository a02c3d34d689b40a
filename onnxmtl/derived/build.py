"""`derive`: the supermodel's backbone graph under one policy, written out as a torch.fx graph."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from torch import fx, nn

from onnxmtl.compiler.backbone import output_values, unit_index
from onnxmtl.compiler.head_output import fit_to_image, head_input
from onnxmtl.compiler.policy import BRANCHES, SHARED, SKIP, SPECIFIC, Policy
from onnxmtl.compiler.supermodel import Choices, PolicyLike, SuperModel
from onnxmtl.derived.model import DerivedModel, UnitBranch
from onnxmtl.errors import ConfigError

INPUT = "image"


class _Writer:
    """Writes the backbone's nodes for the kept tasks into one fx graph: a node, or a unit
    branch that tasks run on the same value, becomes one node for all of them."""

    def __init__(self, model: SuperModel, choices: Choices, keep: list[int]) -> None:
        self.model, self.choices, self.keep = model, choices, keep
        self.graph = fx.Graph()
        self.image = self.graph.placeholder(INPUT)
        self.objects: dict[str, Any] = {}  # target -> the supermodel's module or weight
        self.branches: dict[str, UnitBranch] = {}
        self.made: dict[tuple, fx.Node] = {}
        self.rows: dict[fx.Node, list[int]] = {}  # a shared branch's call -> the tasks it serves
        self.heads: dict[str, str] = {}  # task name -> its head's target

    def unit(self, u: int, task: int, x: fx.Node) -> fx.Node:
        """The node computing unit `u` for supermodel task `task` on `x`."""
        branch = self.choices[task][u]
        branches = self.model.unit_branches(u)
        if branch == SKIP and isinstance(branches.skip, nn.Identity):
            return x
        module: nn.Module | None
        if branch == SPECIFIC:
            ref = UnitBranch(u, BRANCHES[branch], self.model.task_names[task])
            module = branches.specific[task]
        else:
            ref = UnitBranch(u, BRANCHES[branch])
            module = branches.shared if branch == SHARED else branches.skip
            assert module is not None  # choices_of allows skips only where present
        self.objects[ref.target] = module
        self.branches[ref.target] = ref
        key = (ref.target, x)
        if key not in self.made:
            self.made[key] = self.graph.call_module(ref.target, (x,))
        node = self.made[key]
        if branch != SPECIFIC:
            self.rows.setdefault(node, []).append(task)  # the run's statistics are its tasks'
        return node

    def node(self, node: fx.Node, inputs: dict[fx.Node, fx.Node]) -> fx.Node:
        """The copy of backbone node `node` reading `inputs` (by backbone node)."""
        key = (node, tuple(inputs[n] for n in node.all_input_nodes))
        if key not in self.made:
            if isinstance(node.target, str):  # a module or a weight of the supermodel
                self.objects[node.target] = attrgetter(node.target)(self.model)
            self.made[key] = self.graph.node_copy(node, inputs.__getitem__)
        return self.made[key]

    def head(self, task: int, feats: list[fx.Node]) -> fx.Node:
        """The node computing supermodel task `task`'s output from its feature values."""
        spec = self.model.tasks[task]
        target = self.heads[spec.name] = f"heads.{spec.name}"
        self.objects[target] = self.model.heads[spec.name]
        y = self.graph.call_module(target, (head_input(spec, feats),))
        if not spec.dense:
            return y
        fitted = (y, self.image)
        return self.graph.create_node("call_function", fit_to_image, fitted, name=spec.name)

    def finish(self) -> None:
        """Give every shared-branch call its tasks, and drop what no output depends on."""
        for node, rows in self.rows.items():
            node.kwargs = {"rows": tuple(rows)}
        # every node but the input and the output is pure: its value is all it gives
        self.graph.eliminate_dead_code(lambda node: node.op in ("placeholder", "output"))
        self.graph.lint()


def derive(
    model: SuperModel, policy: PolicyLike | None = None, tasks: Sequence[str] | None = None
) -> DerivedModel:
    """The multi-task model `policy` implies on `model` (default: the model's policy), for
    all its tasks or the named subset (a single-task model is `tasks=[name]`). Weights are
    copied, so training either model leaves the other alone."""
    policy = model.policy if policy is None else policy
    choices = model.choices_of(policy)
    keep = _kept(model, tasks)
    writer = _Writer(model, choices, keep)
    values: dict[fx.Node, list[fx.Node]] = {}  # backbone node -> per kept task
    for node in model.backbone.nodes:
        u = unit_index(node)
        if node.op == "placeholder":
            values[node] = [writer.image] * len(keep)
        elif node.op == "output":
            features = [[values[r][k] for r in output_values(node)] for k in range(len(keep))]
        elif u is not None:
            xs = values[node.all_input_nodes[0]]
            values[node] = [writer.unit(u, t, x) for t, x in zip(keep, xs)]
        else:
            values[node] = [
                writer.node(node, {n: values[n][k] for n in node.all_input_nodes})
                for k in range(len(keep))
            ]
    outputs = {model.task_names[t]: writer.head(t, features[k]) for k, t in enumerate(keep)}
    writer.graph.output(outputs)
    writer.finish()

    used = {n.target for n in writer.graph.nodes if n.op in ("call_module", "get_attr")}
    names = _qualified_names(model)
    kept = [model.tasks[t] for t in keep]
    derived_policy = Policy(
        [t.name for t in kept],
        model.unit_names,
        [list(choices[t]) for t in keep],
        method=policy.method if isinstance(policy, Policy) else "given",
        seed=policy.seed if isinstance(policy, Policy) else None,
    )
    return DerivedModel(
        {t: copy.deepcopy(writer.objects[t]) for t in used},
        writer.graph,
        kept,
        derived_policy,
        {t: b for t, b in writer.branches.items() if t in used},
        writer.heads,
        {t: names[id(writer.objects[t])] for t in used},
        model.graph.input_shape,
    )


def _kept(model: SuperModel, tasks: Sequence[str] | None) -> list[int]:
    """The indices of the tasks to derive: the named ones, or all."""
    names = model.task_names
    if tasks is None:
        return list(range(len(names)))
    unknown = [t for t in tasks if t not in names]
    if unknown or not tasks:
        raise ConfigError(f"cannot derive tasks {list(tasks)}: the supermodel has tasks {names}.")
    return [names.index(t) for t in tasks]


def _qualified_names(model: nn.Module) -> dict[int, str]:
    """The qualified name of each module, parameter and buffer of `model`, by identity."""
    named = [*model.named_modules(), *model.named_parameters(), *model.named_buffers()]
    return {id(obj): name for name, obj in named}
