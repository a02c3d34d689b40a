"""`derive`: the supermodel's fixed mode under one policy, traced into a torch.fx graph."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import torch
from torch import fx, nn

from onnxmtl.compiler.policy import BRANCHES, SHARED, SKIP, SPECIFIC, Policy
from onnxmtl.compiler.supermodel import Choices, PolicyLike, SuperModel
from onnxmtl.derived.model import DerivedModel, UnitBranch
from onnxmtl.errors import ConfigError

INPUT = "image"


class _FixedRun(nn.Module):
    """The supermodel's fixed mode for the kept tasks, as the module the tracer records."""

    def __init__(self, model: SuperModel, choices: Choices, keep: list[int]) -> None:
        super().__init__()
        self.model, self.choices, self.keep = model, choices, keep

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(image, "fixed", policy=self.choices, tasks=self.keep)


class _Tracer(fx.Tracer):
    """Records the backbone's operators, the unit branches and the heads as calls, without
    looking inside them."""

    def __init__(self, leaves: set[int]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self.leaves or super().is_leaf_module(m, module_qualified_name)


def _unit_branches(model: SuperModel) -> dict[int, UnitBranch]:
    """What each unit-branch module of `model` is, by identity."""
    found: dict[int, UnitBranch] = {}
    for u in range(len(model.units)):
        unit = model.unit_branches(u)
        found[id(unit.shared)] = UnitBranch(u, BRANCHES[SHARED])
        if unit.skip is not None:
            found[id(unit.skip)] = UnitBranch(u, BRANCHES[SKIP])
        for name, module in zip(model.task_names, unit.specific):
            found[id(module)] = UnitBranch(u, BRANCHES[SPECIFIC], name)
    return found


def derive(
    model: SuperModel, policy: PolicyLike | None = None, tasks: Sequence[str] | None = None
) -> DerivedModel:
    """The multi-task model `policy` implies on `model` (default: the model's policy), for
    all its tasks or the named subset (a single-task model is `tasks=[name]`): the
    supermodel's fixed mode traced, so that it computes what the supermodel does by
    construction. Each unit branch, backbone operator and head is one call; identity skips
    are gone. Weights are copied, so training either model leaves the other alone."""
    policy = model.policy if policy is None else policy
    choices = model.choices_of(policy)
    keep = _kept(model, tasks)
    runner = _FixedRun(model, choices, keep)
    units = _unit_branches(model)
    leaves = (
        set(units) | {id(m) for m in model.ops.values()} | {id(m) for m in model.heads.values()}
    )
    last_choices = model.last_choices
    try:
        graph = _Tracer(leaves).trace(runner)
    finally:
        model.last_choices = last_choices

    objects: dict[str, Any] = {}  # target -> the supermodel's module or weight
    sources: dict[str, str] = {}  # target -> its qualified name in the supermodel
    branches: dict[str, UnitBranch] = {}
    heads = {model.tasks[t].name: f"heads.{model.tasks[t].name}" for t in keep}
    for node in list(graph.nodes):
        if node.op not in ("call_module", "get_attr"):
            continue
        obj = attrgetter(node.target)(runner)
        source = node.target.removeprefix("model.")
        ref = units.get(id(obj)) if node.op == "call_module" else None
        if isinstance(obj, nn.Identity) and ref is not None:  # a skip that changes nothing
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            continue
        node.target = ref.target if ref is not None else source
        objects[node.target], sources[node.target] = obj, source
        if ref is not None:
            branches[node.target] = ref
    # every node but the input and the output is pure: its value is all it gives
    graph.eliminate_dead_code(lambda node: node.op in ("placeholder", "output"))
    _readable(graph)
    graph.lint()

    used = {n.target for n in graph.nodes if n.op in ("call_module", "get_attr")}
    kept = [model.tasks[t] for t in keep]
    derived_policy = Policy(
        [t.name for t in kept],
        model.unit_names,
        [list(choices[t]) for t in keep],
        method=policy.method if isinstance(policy, Policy) else "given",
        seed=policy.seed if isinstance(policy, Policy) else None,
    )
    return DerivedModel(
        {t: copy.deepcopy(objects[t]) for t in used},
        graph,
        kept,
        derived_policy,
        {t: b for t, b in branches.items() if t in used},
        heads,
        {t: sources[t] for t in used},
        model.graph.input_shape,
    )


def _readable(graph: fx.Graph) -> None:
    """Names that read as the derived model's own: a call by its target, an output by its
    task, no tracing annotations."""
    for node in graph.nodes:
        node.type = None
        if node.op in ("call_module", "get_attr"):
            node._rename(str(node.target).replace(".", "_"))
        elif node.op == "call_function":
            node._rename(node.name.removeprefix("model_"))
    (output,) = (n for n in graph.nodes if n.op == "output")
    for task, value in output.args[0].items():
        value._rename(task)


def _kept(model: SuperModel, tasks: Sequence[str] | None) -> list[int]:
    """The indices of the tasks to derive: the named ones, or all."""
    names = model.task_names
    if tasks is None:
        return list(range(len(names)))
    unknown = [t for t in tasks if t not in names]
    if unknown or not tasks:
        raise ConfigError(f"cannot derive tasks {list(tasks)}: the supermodel has tasks {names}.")
    return [names.index(t) for t in tasks]
