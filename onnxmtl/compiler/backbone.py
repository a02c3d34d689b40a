"""The lowered backbone as the supermodel's graph: one torch.fx graph in which each unit is a
single node, calling `units.<index>`, that the supermodel dispatches to the unit's branches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from onnxmtl.compiler.branches import Arg, Renorm, UnitOps
from onnxmtl.errors import LoweringError
from onnxmtl.ir import Graph, Unit
from onnxmtl.lower import onnx_names, onnx_values

UNIT = "unit"  # the `meta` key holding a unit node's index


@dataclass
class Backbone:
    """The graph over the supermodel's own names (`ops.<name>`, `weights.<name>`,
    `units.<index>`), the parameter-free modules it calls, the weights it reads and the
    operators of each unit."""

    graph: fx.Graph
    ops: dict[str, nn.Module]
    weights: dict[str, torch.Tensor]
    units: list[UnitOps]


def unit_index(node: fx.Node) -> int | None:
    """The index of the unit `node` runs, or None for any other node."""
    index = node.meta.get(UNIT)
    return index if isinstance(index, int) else None


def output_values(node: fx.Node) -> list[fx.Node]:
    """The values an output node returns (one, or a tuple of them), in order."""
    results = node.args[0]
    values = results if isinstance(results, tuple) else (results,)
    nodes = [v for v in values if isinstance(v, fx.Node)]
    assert len(nodes) == len(values), "a backbone returns computed values only"
    return nodes


def build_backbone(graph: Graph, lowered: fx.GraphModule, renormalize: set[int]) -> Backbone:
    """`lowered` with each unit's chain of operators collapsed into one unit node; units in
    `renormalize` get a `Renorm` appended to their operators. Trainable weights stay
    nn.Parameters, as in `lowered`."""
    nodes = {n.name: n for n in lowered.graph.nodes}
    attr_of = {onnx: attr for attr, onnx in onnx_names(lowered).items()}
    value_node = {v: nodes[n] for v, n in onnx_values(lowered).items()}
    by_target = {n.target: n for n in lowered.graph.nodes if n.op == "call_module"}
    head_of: dict[fx.Node, int] = {}  # a unit's first operator -> the unit
    output_of: dict[fx.Node, fx.Node] = {}  # a unit's first operator -> its output's node
    members: set[fx.Node] = set()
    units: list[UnitOps] = []
    for index, unit in enumerate(graph.units):
        chain = [by_target[attr_of[name]] for name in unit.nodes]
        head_of[chain[0]] = index
        output_of[chain[0]] = value_node[unit.output]
        members.update(chain)
        units.append(_unit_ops(lowered, chain, unit, index in renormalize))

    out = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    ops: dict[str, nn.Module] = {}
    weights: dict[str, torch.Tensor] = {}

    def mapped(arg: fx.Node) -> fx.Node:
        if arg.op == "get_attr" and arg not in env:  # a weight read outside the units
            env[arg] = out.get_attr(_attr(arg))
            weights[_weight_name(arg)] = _weight(lowered, arg)
        if arg not in env:
            raise LoweringError(f"lowered graph reads '{arg.name}' before it is computed.")
        return env[arg]

    for node in lowered.graph.nodes:
        if node in head_of:
            index = head_of[node]
            source = value_node[graph.units[index].input]
            unit_node = out.call_module(f"units.{index}", (mapped(source),))
            unit_node.meta[UNIT] = index
            env[output_of[node]] = unit_node
        elif node in members or node.op == "get_attr":
            continue
        elif node.op == "call_module":
            ops[_attr(node)] = lowered.get_submodule(_attr(node))
            env[node] = out.create_node(
                "call_module",
                f"ops.{_attr(node)}",
                fx.map_arg(node.args, mapped),
                fx.map_arg(node.kwargs, mapped),
                node.name,
            )
        else:
            env[node] = out.node_copy(node, mapped)
    out.lint()
    return Backbone(out, ops, weights, units)


def _attr(node: fx.Node) -> str:
    """The attribute a call_module or get_attr node names."""
    if not isinstance(node.target, str):
        raise LoweringError(f"lowered node '{node.name}' names no attribute.")
    return node.target


def _weight_name(node: fx.Node) -> str:
    """The name of the weight a get_attr node of a lowered graph reads (in its `weights`)."""
    return _attr(node).removeprefix("weights.")


def _weight(lowered: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    return getattr(lowered.weights, _weight_name(node))


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
                name = _weight_name(a)
                tensor = _weight(lowered, a)
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


def unit_ancestors(graph: fx.Graph, num_units: int) -> list[set[int]]:
    """For each unit, the units whose outputs its input depends on."""
    deps: dict[fx.Node, set[int]] = {}
    ancestors: list[set[int]] = [set() for _ in range(num_units)]
    for node in graph.nodes:
        upstream: set[int] = set().union(*(deps[n] for n in node.all_input_nodes))
        index = unit_index(node)
        if index is not None:
            ancestors[index] = upstream
            upstream = upstream | {index}
        deps[node] = upstream
    return ancestors
