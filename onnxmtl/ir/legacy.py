"""Rewrites of what old exporters (opsets 7-12, the legacy model zoo) wrote and no current
ONNX schema accepts, done on the proto before it is checked or upgraded."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def modernise(proto: onnx.ModelProto) -> None:
    """Rewrite `proto` in place: declared shapes left to inference, ImageScaler spelled as Mul
    and Add, Dropout's `is_test` dropped.

    Old exporters declared the shape of every value, weights listed as inputs included, and
    some declarations are wrong (a weight declared at another shape than its tensor's, an
    output at the size of another input): shape inference in strict mode stops at the first
    conflict, so only the image input's declaration is kept and the rest is inferred.

    ImageScaler was an experimental op with no schema today, so neither the checker nor the
    version converter takes it; `is_test` (Dropout before opset 7) means inference, which is
    what Dropout computes in eval mode anyway.
    """
    graph = proto.graph
    _redeclare(proto)
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
            kept = [a for a in node.attribute if a.name != "is_test"]
            del node.attribute[:]
            node.attribute.extend(kept)
        if node.op_type == "ImageScaler" and node.domain in ("", "ai.onnx"):
            nodes += _image_scaler(graph, node, as_inputs=proto.ir_version < 4)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _redeclare(proto: onnx.ModelProto) -> None:
    """Drop declared intermediate shapes and output sizes; declare weights listed as inputs at
    their tensors' shapes and types."""
    graph = proto.graph
    del graph.value_info[:]
    for output in graph.output:  # the checker wants a shape: keep the rank, free the sizes
        for i, dim in enumerate(output.type.tensor_type.shape.dim):
            dim.dim_param = f"{output.name}_{i}"
    tensors = {t.name: t for t in graph.initializer}
    for value in graph.input:
        tensor = tensors.get(value.name)
        if tensor is not None:
            value.type.CopyFrom(helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims)))


def _image_scaler(
    graph: onnx.GraphProto, node: onnx.NodeProto, as_inputs: bool
) -> list[onnx.NodeProto]:
    """y = scale * x + bias[c], as Mul and Add with the constants as initializers (declared as
    graph inputs too where the IR version, below 4, requires it)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    bias = np.asarray(attrs.get("bias", [0.0]), np.float32).reshape(1, -1, 1, 1)
    scale = np.asarray(attrs.get("scale", 1.0), np.float32)
    base = node.name or node.output[0]
    names = (f"{base}_scale", f"{base}_bias", f"{base}_scaled")
    for name, array in zip(names, (scale, bias)):
        graph.initializer.append(numpy_helper.from_array(array, name))
        if as_inputs:
            graph.input.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, array.shape)
            )
    return [
        helper.make_node("Mul", [node.input[0], names[0]], [names[2]], name=f"{base}_mul"),
        helper.make_node("Add", [names[2], names[1]], list(node.output), name=base),
    ]
