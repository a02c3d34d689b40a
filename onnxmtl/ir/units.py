"""Units: the parameterised operators the multi-task policy chooses between.

A unit is one parameterised operator (Conv, ConvTranspose, Gemm, MatMul with a constant weight,
or a normalisation standing alone) together with a bias Add and the normalisation that directly
follow it, so that sharing a unit shares its normalisation too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_ir as ir

from onnxmtl.ir.shapes import ShapeT, shape_of
from onnxmtl.ir.values import const_of, name_of, node_name, required_input

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
NORM_OPS = (
    "BatchNormalization",
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
)


@dataclass(frozen=True)
class Unit:
    """One searchable unit of the backbone (a plain value; shapes are per graph input)."""

    name: str  # name of the unit's first node
    op_type: str  # op type of that node
    nodes: tuple[str, ...]  # names of the nodes the unit spans, in order
    input: str  # name of the value the unit reads
    output: str  # name of the value the unit produces
    weights: tuple[str, ...]  # names of the initializers the unit owns
    params: int  # number of weight elements (running statistics excluded)
    macs: int  # multiply-accumulates for one sample
    in_shape: ShapeT | None  # None where shape inference left it unknown
    out_shape: ShapeT | None
    norm: str | None  # op type of the normalisation inside the unit, if any
    depth: int  # longest path of units from the image input, counting this one

    @property
    def keeps_shape(self) -> bool:
        """Whether the unit's output has the shape of its input (an identity skip fits);
        False where either shape is unknown."""
        return self.in_shape is not None and self.in_shape == self.out_shape


def _const_input(node: ir.Node, index: int) -> bool:
    value = node.inputs[index] if len(node.inputs) > index else None
    return value is not None and value.const_value is not None


def _is_linear(node: ir.Node) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type not in LINEAR_OPS:
        return False
    if not _const_input(node, 1) or _const_input(node, 0):
        return False
    if node.op_type == "MatMul":
        return const_of(required_input(node, 1)).shape.rank() == 2
    if node.op_type == "Gemm":
        attr = node.attributes.get("transA")
        return attr is None or attr.as_int() == 0
    return True


def _is_norm(node: ir.Node) -> bool:
    return (
        node.domain in ("", "ai.onnx")
        and node.op_type in NORM_OPS
        and not _const_input(node, 0)
        and all(_const_input(node, i) for i in range(1, len(node.inputs)) if node.inputs[i])
        and len([o for o in node.outputs if o.uses() or o.is_graph_output()]) == 1
    )


def _sole_consumer(value: ir.Value) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    node, index = uses[0]
    return node if index == 0 or node.op_type == "Add" else None


def _is_bias_add(node: ir.Node, data: ir.Value) -> bool:
    if node.op_type != "Add" or len(node.inputs) != 2:
        return False
    other = node.inputs[1] if node.inputs[0] is data else node.inputs[0]
    return other is not None and other.const_value is not None


def _params(weights: list[ir.Value], node: ir.Node) -> int:
    if node.op_type == "BatchNormalization":
        weights = weights[:2]  # scale and bias; the running mean and variance are statistics
    return sum(const_of(w).size for w in weights)


def _numel(shape: ShapeT | None) -> int:
    return math.prod(d for d in (shape or ())[1:] if isinstance(d, int))


def _macs(node: ir.Node) -> int:
    out = shape_of(node.outputs[0])
    if node.op_type in NORM_OPS:
        return _numel(out)
    weight = const_of(required_input(node, 1)).shape.numpy()
    if node.op_type == "Conv":
        return _numel(out) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        return _numel(shape_of(required_input(node, 0))) * math.prod(weight[1:])
    trans_b = node.op_type == "Gemm" and (
        node.attributes.get("transB") is not None and node.attributes["transB"].as_int() == 1
    )
    return _numel(out) * (weight[1] if trans_b else weight[0])


def find_units(graph: ir.Graph) -> list[Unit]:
    """Group the graph's parameterised nodes into units, in topological order, with depths."""
    raw: list[tuple[list[ir.Node], int]] = []
    claimed: set[int] = set()
    for node in graph:
        if id(node) in claimed:
            continue
        if _is_linear(node):
            members = [node]
            nxt = _sole_consumer(node.outputs[0])
            if nxt is not None and _is_bias_add(nxt, node.outputs[0]):
                members.append(nxt)
                nxt = _sole_consumer(nxt.outputs[0])
            if nxt is not None and _is_norm(nxt):
                members.append(nxt)
        elif _is_norm(node):
            members = [node]
        else:
            continue
        claimed.update(id(m) for m in members)
        raw.append((members, len(raw)))

    depth_of_value: dict[int, int] = {}
    unit_depth: dict[int, int] = {}
    first = {id(members[0]): i for members, i in raw}
    for node in graph:
        depth = max((depth_of_value.get(id(v), 0) for v in node.inputs if v is not None), default=0)
        if id(node) in first:
            depth += 1
            unit_depth[first[id(node)]] = depth
        for out in node.outputs:
            depth_of_value[id(out)] = depth

    units = []
    for members, i in raw:
        head, last = members[0], members[-1]
        weights = [
            v
            for m in members
            for v in m.inputs
            if v is not None
            and v.const_value is not None
            and v.dtype is not None
            and v.dtype.is_floating_point()
        ]
        units.append(
            Unit(
                name=node_name(head),
                op_type=head.op_type,
                nodes=tuple(node_name(m) for m in members),
                input=name_of(required_input(head, 0)),
                output=name_of(next(o for o in last.outputs if o.uses() or o.is_graph_output())),
                weights=tuple(name_of(w) for w in weights),
                params=sum(_params([w for w in m.inputs if w in weights], m) for m in members),
                macs=sum(_macs(m) for m in members if m.op_type != "Add"),
                in_shape=shape_of(required_input(head, 0)),
                out_shape=shape_of(last.outputs[0]),
                norm=next((m.op_type for m in members if m.op_type in NORM_OPS), None),
                depth=unit_depth[i],
            )
        )
    return units
