"""The original file as the reference a batch rewrite is checked against: taking images of
the size load works at, computing the features only."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from onnxmtl.errors import ShapeError
from onnxmtl.ir.values import dims_of, name_of


def forget_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto` without the shapes inferred for the batch of 1, which no longer hold."""
    del proto.graph.value_info[:]
    for output in proto.graph.output:
        output.type.tensor_type.ClearField("shape")
    return proto


def at_input_size(original: onnx.ModelProto, value: ir.Value) -> onnx.ModelProto:
    """`original` (at its fixed batch) taking images of the channels and size of the image
    input `value`, without the shapes inferred at its declared size: the reference for the
    rewrite when `load` was given another input size."""
    dims = graph_input(original, name_of(value)).type.tensor_type.shape.dim
    for dim, size in zip(dims[1:], dims_of(value)[1:], strict=True):
        if not isinstance(size, int):  # fix_input_shape made C, H and W concrete
            raise ShapeError(f"input '{value.name}' has symbolic size {size}.")
        dim.Clear()
        dim.dim_value = size
    return forget_shapes(original)


def outputs_at(original: onnx.ModelProto, names: list[str] | None) -> onnx.ModelProto:
    """`original` computing the values `names` only (None: its own outputs), the rest pruned."""
    if names is None:
        return original
    needed, kept = set(names), []
    for node in reversed(original.graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    pruned = onnx.ModelProto()
    pruned.CopyFrom(original)
    del pruned.graph.node[:], pruned.graph.output[:]
    pruned.graph.node.extend(reversed(kept))
    pruned.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names
    )
    return pruned


def graph_input(proto: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    """The graph input of `proto` called `name`."""
    return next(v for v in proto.graph.input if v.name == name)
