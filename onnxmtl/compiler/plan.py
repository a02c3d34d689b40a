"""Turn a lowered backbone into an execution plan: parameter-free steps and unit steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import fx, nn

from onnxmtl.compiler.branches import Arg, Renorm, UnitOps
from onnxmtl.errors import LoweringError
from onnxmtl.ir import Graph, Unit
from onnxmtl.lower import onnx_names, onnx_values

# ("s", slot) a value, ("w", name) a shared weight, ("c", constant)
SlotRef = tuple[Literal["s"], int]
WeightRef = tuple[Literal["w"], str]
ConstRef = tuple[Literal["c"], object]
Ref = SlotRef | WeightRef | ConstRef


@dataclass
class Step:
    """One operation of the plan, reading value slots and writing one."""

    kind: str  # "op" (a module), "fn" (a function such as getitem) or "unit"
    target: str | int | Callable  # op name, unit index or function
    args: list[Ref]
    kwargs: dict[str, Ref]
    out: int
    free: list[int] = field(default_factory=list)  # slots last read by this step
    rows: list[int] | None = None  # a shared branch's tasks, whose statistics it normalises with

    @property
    def slots(self) -> list[int]:
        refs = [*self.args, *self.kwargs.values()]
        return [r[1] for r in refs if r[0] == "s"]

    @property
    def weights(self) -> list[str]:
        """The shared weights the step reads."""
        refs = [*self.args, *self.kwargs.values()]
        return [r[1] for r in refs if r[0] == "w"]

    @property
    def unit(self) -> int:
        """The index of the unit a "unit" step runs."""
        if not isinstance(self.target, int):
            raise TypeError(f"a {self.kind!r} step runs no unit (target {self.target!r}).")
        return self.target

    @property
    def module(self) -> str:
        """The name of the module an "op" step calls."""
        if not isinstance(self.target, str):
            raise TypeError(f"a {self.kind!r} step calls no module (target {self.target!r}).")
        return self.target

    @property
    def function(self) -> Callable:
        """The function an "fn" step calls."""
        if isinstance(self.target, str | int):
            raise TypeError(f"a {self.kind!r} step calls no function (target {self.target!r}).")
        return self.target


@dataclass
class Plan:
    steps: list[Step]
    outputs: list[int]  # slots of the feature values
    num_slots: int


def _ref(arg: object, slot_of: dict[fx.Node, int], weight_of: dict[fx.Node, str]) -> Ref:
    if isinstance(arg, fx.Node):
        if arg in slot_of:
            return ("s", slot_of[arg])
        if arg in weight_of:
            return ("w", weight_of[arg])
        raise LoweringError(f"lowered graph reads '{arg.name}' before it is computed.")
    if isinstance(arg, list | tuple) and any(isinstance(a, fx.Node) for a in arg):
        raise LoweringError("a lowered node takes a nested list of values; not supported yet.")
    return ("c", arg)


def build_plan(
    graph: Graph, lowered: fx.GraphModule, renormalize: set[int]
) -> tuple[Plan, dict[str, nn.Module], dict[str, torch.Tensor], list[UnitOps]]:
    """The plan, the parameter-free modules by name, the weights they read (trainable ones
    are nn.Parameters, as in `lowered`), and each unit's operators as a `UnitOps` (with a
    `Renorm` appended for units in `renormalize`)."""
    nodes = {n.name: n for n in lowered.graph.nodes}
    attr_of = {onnx: attr for attr, onnx in onnx_names(lowered).items()}
    value_node = {v: nodes[n] for v, n in onnx_values(lowered).items()}
    by_target = {n.target: n for n in lowered.graph.nodes if n.op == "call_module"}
    unit_of_head: dict[fx.Node, int] = {}
    members: set[fx.Node] = set()
    unit_ops: list[UnitOps] = []
    for index, unit in enumerate(graph.units):
        chain = [by_target[attr_of[name]] for name in unit.nodes]
        unit_of_head[chain[0]] = index
        members.update(chain)
        unit_ops.append(_unit_ops(lowered, chain, unit, index in renormalize))

    slot_of: dict[fx.Node, int] = {}
    weight_of: dict[fx.Node, str] = {}
    ops: dict[str, nn.Module] = {}
    weights: dict[str, torch.Tensor] = {}
    steps: list[Step] = []
    for node in lowered.graph.nodes:
        if node.op == "placeholder":
            slot_of[node] = len(slot_of)
        elif node.op == "get_attr":
            weight_of[node] = _attr(node).split(".", 1)[1]
        elif node.op == "call_module" and node in unit_of_head:
            index = unit_of_head[node]
            unit = graph.units[index]
            source = value_node[unit.input]
            out_node = value_node[unit.output]
            slot_of[out_node] = len(slot_of)
            steps.append(Step("unit", index, [("s", slot_of[source])], {}, slot_of[out_node]))
        elif node in members:
            continue
        elif node.op in ("call_module", "call_function"):
            args = [_ref(a, slot_of, weight_of) for a in node.args]
            kwargs = {k: _ref(a, slot_of, weight_of) for k, a in node.kwargs.items()}
            for ref in [*args, *kwargs.values()]:
                if ref[0] == "w":
                    weights[ref[1]] = _weight(lowered, ref[1])
            slot_of[node] = len(slot_of)
            if node.op == "call_module":
                ops[_attr(node)] = lowered.get_submodule(_attr(node))
                steps.append(Step("op", _attr(node), args, kwargs, slot_of[node]))
            else:
                steps.append(Step("fn", node.target, args, kwargs, slot_of[node]))
        elif node.op == "output":
            results = node.args[0] if isinstance(node.args[0], tuple) else (node.args[0],)
            outputs = [slot_of[r] for r in results]
    set_frees(steps, outputs)
    return Plan(steps, outputs, len(slot_of)), ops, weights, unit_ops


def _attr(node: fx.Node) -> str:
    """The attribute a call_module or get_attr node names."""
    if not isinstance(node.target, str):
        raise LoweringError(f"lowered node '{node.name}' names no attribute.")
    return node.target


def _weight(lowered: fx.GraphModule, name: str) -> torch.Tensor:
    return getattr(lowered.weights, name)


def _unit_ops(lowered: fx.GraphModule, chain: list[fx.Node], unit: Unit, renorm: bool) -> UnitOps:
    ops: list[nn.Module] = []
    args: list[list[Arg]] = []
    weights: dict[str, torch.Tensor] = {}
    trainable: set[str] = set()
    for i, node in enumerate(chain):
        if node.kwargs:
            raise LoweringError(f"unit '{unit.name}': node '{node.name}' takes keyword inputs.")
        refs: list[Arg] = []
        for a in node.args:
            if isinstance(a, fx.Node) and a.op == "get_attr":
                name = _attr(a).split(".", 1)[1]
                tensor = _weight(lowered, name)
                weights[name] = tensor.detach().clone()
                if isinstance(tensor, nn.Parameter):
                    trainable.add(name)
                refs.append(("w", name))
            elif isinstance(a, fx.Node) and (i == 0 or a is chain[i - 1]):
                refs.append(("x", None))
            else:
                raise LoweringError(
                    f"unit '{unit.name}': node '{node.name}' reads a value from outside the unit."
                )
        ops.append(lowered.get_submodule(_attr(node)))
        args.append(refs)
    return UnitOps(ops, args, weights, trainable, _renorm(unit) if renorm else None)


def _renorm(unit: Unit) -> Renorm:
    """The normalisation re-inserted after `unit`, over its output channels."""
    channels = unit.out_shape[1] if unit.out_shape else None
    if not isinstance(channels, int):
        raise LoweringError(f"unit '{unit.name}': unknown output channels {channels!r}.")
    return Renorm(channels)


def set_frees(steps: list[Step], outputs: list[int]) -> None:
    """Record on each step the slots it reads for the last time (not the outputs)."""
    last: dict[int, Step] = {}
    for step in steps:
        for slot in step.slots:
            last[slot] = step
    for slot, step in last.items():
        if slot not in outputs:
            step.free.append(slot)


def unit_ancestors(plan: Plan, num_units: int) -> list[set[int]]:
    """For each unit, the units whose outputs its input depends on."""
    deps: dict[int, set[int]] = {}
    ancestors: list[set[int]] = [set() for _ in range(num_units)]
    for step in plan.steps:
        upstream: set[int] = set().union(*(deps.get(s, set()) for s in step.slots))
        if step.kind == "unit":
            ancestors[step.unit] = upstream
            upstream = upstream | {step.unit}
        deps[step.out] = upstream
    return ancestors
