"""Passes that turn what real exporters emit into a plain graph of operators and weights.

Exporters store weights as Constant nodes, put Identity nodes in front of initializers (the
legacy torch exporter merges equal zero biases this way), or compute weights with small
constant subgraphs (Shape -> Expand -> CastLike in dynamo exports, Reshape/Transpose of
constants in TensorFlow ones). After these passes every weight is an initializer owned by
exactly one node, and every node depends on the image input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common
from onnx import helper
from onnx.reference import ReferenceEvaluator

from onnxmtl.ir.shapes import infer_shapes
from onnxmtl.ir.values import const_of, name_of

FOLDED = "onnxmtl.folded"
MAX_FOLD_ROUNDS = 64
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
_NONDETERMINISTIC |= {"Multinomial", "Bernoulli", "Dropout"}


class FoldConstantsPass(ir.passes.InPlacePass):
    """Replace every node computable without the image input by initializers.

    Besides nodes whose inputs are all constants, `Shape` and `Size` of a value whose
    (requested part of the) shape is static fold, and `CastLike` folds whenever its first input
    is constant, since the target type is known.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = model.opset_imports.get("", 1)
        folded = 0
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC:
                continue
            if node.op_type == "Constant" or any(o.is_graph_output() for o in node.outputs):
                continue
            if node.op_type == "Reshape" and _const(node.inputs[1]) is None:
                folded += _pin_reshape(graph, node)
                continue
            values = _fold(node, opset)
            if values is None:
                continue
            for output, array in zip(node.outputs, values):
                _replace_with_initializer(graph, output, array)
            graph.remove(node, safe=True)
            folded += 1
        return ir.passes.PassResult(model, modified=bool(folded))


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _consts(values: Sequence[ir.Value | None]) -> list[np.ndarray] | None:
    """The arrays of `values`, or None unless every one is a constant."""
    arrays = [_const(v) for v in values]
    return [a for a in arrays if a is not None] if all(a is not None for a in arrays) else None


def _shape_dims(node: ir.Node | None) -> list | None:
    """The dims (ints and symbols) a `Shape` node returns, or None for any other node."""
    if node is None or node.op_type != "Shape":
        return None
    data = node.inputs[0]
    if data is None or data.shape is None:
        return None
    dims = list(data.shape)
    return dims[slice(_attr_int(node, "start", 0), _attr_int(node, "end", len(dims)))]


def _static(dims: list) -> np.ndarray | None:
    if not all(isinstance(d, int) for d in dims):
        return None
    return np.array(dims, dtype=np.int64)


def _fold_shape_read(node: ir.Node) -> list[np.ndarray] | None:
    """Fold Gather/Slice reading only the static part of a partly symbolic Shape."""
    data = node.inputs[0]
    dims = None if data is None else _shape_dims(data.producer())
    rest = _consts(node.inputs[1:])
    if dims is None or rest is None:
        return None
    positions = np.arange(len(dims))
    if node.op_type == "Gather":
        picked = positions[rest[0]]
    else:
        starts, ends = rest[0], rest[1]
        steps = rest[3] if len(rest) > 3 else np.ones_like(starts)
        if len(rest) > 2 and list(rest[2]) not in ([0], [-1]):
            return None
        picked = positions[slice(int(starts[0]), int(ends[0]), int(steps[0]))]
    values = np.array([dims[i] for i in np.ravel(picked)], dtype=object).reshape(np.shape(picked))
    static = _static(list(np.ravel(values)))
    return None if static is None else [static.reshape(np.shape(picked))]


def _symbolic(value: ir.Value | None) -> list | None:
    """The content of a 1-D int tensor computed from shapes, as ints and symbols."""
    if value is None:
        return None
    const = _const(value)
    if const is not None:
        return [int(x) for x in np.ravel(const)] if const.ndim <= 1 else None
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "Shape":
        return _shape_dims(node)
    if node.op_type in ("Cast", "Identity"):
        return _symbolic(node.inputs[0])
    if node.op_type in ("Unsqueeze", "Squeeze"):
        dims = _symbolic(node.inputs[0])
        return dims if dims is not None and len(dims) == 1 else None
    if node.op_type == "Concat":
        joined = []
        for v in node.inputs:
            part = _symbolic(v)
            if part is None:
                return None
            joined.extend(part)
        return joined
    if node.op_type == "Gather" and len(node.inputs) == 2:
        dims, index = _symbolic(node.inputs[0]), _const(node.inputs[1])
        if dims is None or index is None or index.ndim > 1:
            return None
        return [dims[int(i)] for i in np.ravel(index)]
    return None


def _pin_reshape(graph: ir.Graph, node: ir.Node) -> int:
    """Give a Reshape whose target is computed from shapes a constant target, with -1 standing
    for its one symbolic dim (the batch), so the batch stays symbolic and the rest is static."""
    dims = _symbolic(node.inputs[1])
    if dims is None:
        return 0
    symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if len(symbolic) != 1 or -1 in dims:
        return 0
    target = np.array([-1 if i == symbolic[0] else d for i, d in enumerate(dims)], np.int64)
    node.replace_input_with(1, add_initializer(graph, f"{node.name}_shape", target))
    return 1


_SUBGRAPHS = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


def _fold(node: ir.Node, opset: int) -> list[np.ndarray] | None:
    op = node.op_type
    if op == "Shape":
        dims = _shape_dims(node)
        static = None if dims is None else _static(dims)
        return None if static is None else [static]
    if op == "Size":
        data = node.inputs[0]
        shape = None if data is None else data.shape
        static = None if shape is None else _static(list(shape))
        return None if static is None else [np.array(int(np.prod(static)), dtype=np.int64)]
    if op in ("Gather", "Slice") and _const(node.inputs[0]) is None:
        return _fold_shape_read(node)
    if op == "CastLike":
        target = node.inputs[1]
        array, like = _const(node.inputs[0]), None if target is None else target.dtype
        if array is None or like is None:
            return None
        return [array.astype(like.numpy())]
    if any(attr.type in _SUBGRAPHS for attr in node.attributes.values()):
        return None  # its subgraphs may read outer-scope values a lone node cannot be given
    if any(v is not None and v.const_value is None for v in node.inputs):
        return None  # checked first: reading a weight (a Conv's) copies it out of its proto
    if not node.inputs and op != "ConstantOfShape":
        return None
    feeds = {name_of(v): _const(v) for v in node.inputs if v is not None}
    evaluator = ReferenceEvaluator(_one_node_model(node, opset))
    return [np.asarray(x) for x in evaluator.run(None, feeds)]


def _one_node_model(node: ir.Node, opset: int) -> onnx.ModelProto:
    """`node` alone in a model importing `opset`: a bare node would be evaluated at the newest
    opset, where Unsqueeze, Squeeze and Reduce* read their axes from an input, not attributes."""
    proto = ir.serde.serialize_node(node)
    graph = helper.make_graph(
        [proto],
        "fold",
        [helper.make_empty_tensor_value_info(name) for name in proto.input if name],
        [helper.make_empty_tensor_value_info(name) for name in proto.output if name],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """`array` as a new initializer of `graph` called `name`."""
    tensor = ir.Tensor(array, name=name)  # ir.tensor's result for an array, without its checks
    init = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype))
    init.const_value = tensor
    graph.register_initializer(init)
    return init


def _replace_with_initializer(graph: ir.Graph, value: ir.Value, array: np.ndarray) -> None:
    name = name_of(value)
    value.name = None
    init = add_initializer(graph, name, array)
    init.meta[FOLDED] = True
    value.replace_all_uses_with(init)


class DropComputedZeroBiasPass(ir.passes.InPlacePass):
    """Remove all-zero Conv biases that a constant subgraph computed.

    The dynamo exporter gives every bias-free convolution such a bias; keeping it would add
    parameters the source model never had. Zero biases stored as weights stay: they are real.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for node in model.graph:
            if node.op_type not in ("Conv", "ConvTranspose") or len(node.inputs) < 3:
                continue
            bias = node.inputs[2]
            if bias is not None and bias.meta.get(FOLDED) and not const_of(bias).numpy().any():
                node.resize_inputs(2)
                count += 1
        return ir.passes.PassResult(model, modified=bool(count))


class UntieInitializersPass(ir.passes.InPlacePass):
    """Give every consumer of a shared floating-point initializer its own copy.

    Equal weights merged by an exporter (one zero bias for many convolutions) must train as
    separate parameters, and each unit must own its weights.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        count = 0
        for value in list(graph.initializers.values()):
            if value.dtype is None or not value.dtype.is_floating_point():
                continue
            uses = list(value.uses())
            if len(uses) < 2:
                continue
            array = const_of(value).numpy()  # read once: each read copies it out of its proto
            for i, (node, index) in enumerate(uses[1:], start=1):
                copy = array.copy()
                node.replace_input_with(index, add_initializer(graph, f"{value.name}__{i}", copy))
                count += 1
        return ir.passes.PassResult(model, modified=bool(count))


class RemoveUnusedInitializersPass(ir.passes.InPlacePass):
    """Drop initializers that no node reads (after folding or cutting the graph)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        unused = [
            name
            for name, value in graph.initializers.items()
            if not value.uses() and not value.is_graph_output()
        ]
        for name in unused:
            graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=bool(unused))


def clean_up(model: ir.Model) -> None:
    """Remove dead nodes and weights, sort topologically and give every node a unique name."""
    common.RemoveUnusedNodesPass()(model)
    RemoveUnusedInitializersPass()(model)
    common.RemoveUnusedOpsetsPass()(model)
    common.TopologicalSortPass()(model)
    common.NameFixPass()(model)


def fold_until_stable(model: ir.Model, label: str) -> None:
    """Fold constants and clean up until nothing changes: each round's inferred shapes may
    resolve reads that unlock the next."""
    for _ in range(MAX_FOLD_ROUNDS):
        infer_shapes(model, label)
        changed = FoldConstantsPass()(model).modified
        clean_up(model)
        if not changed:
            break
