"""`converter_graph`: the IR graph as onnx2torch's `OnnxGraph`, its weights read from the IR.

The converters read a GraphProto. A whole serialised model copies every weight into the proto,
and a converter reading one back copies it twice more (out of the proto, then into a writable
array); for ResNet-sized backbones these copies were a third of the lowering time. Here the
proto declares each weight (name, type, dims) without its data, and a converter's `to_numpy`
or `to_torch` copies the IR's tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import onnx
import onnx_ir as ir
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_tensor import OnnxTensor

from onnxmtl.ir import Graph


class IrTensor(OnnxTensor):
    """A weight as the converters see it: declared by a data-free proto, read from the IR."""

    def __init__(self, proto: onnx.TensorProto, tensor: ir.TensorProtocol) -> None:
        super().__init__(proto)
        self._tensor = tensor

    def to_numpy(self) -> np.ndarray:
        """A writable C-ordered copy of the weight (as onnx reads it from a proto), owned by the
        caller: converters train it."""
        return np.array(self._tensor.numpy(), order="C", copy=True)


class IrGraph(OnnxGraph):
    """An `OnnxGraph` whose initializers hand out the IR's weights."""

    def __init__(self, proto: onnx.GraphProto, tensors: Mapping[str, ir.TensorProtocol]) -> None:
        super().__init__(proto)
        self._weights: dict[str, OnnxTensor] = {
            name: IrTensor(t.proto, tensors[name]) if name in tensors else t
            for name, t in super().initializers.items()
        }

    @property
    def initializers(self) -> Mapping[str, OnnxTensor]:
        return MappingProxyType(self._weights)


def converter_graph(graph: Graph) -> OnnxGraph:
    """`graph`'s model as the converters read it; its weights are not copied until read.

    String tensors, which the IR holds as bytes where onnx's reader gives str, stay in the
    proto with their data.
    """
    inits = graph.model.graph.initializers
    held = dict(inits)
    tensors = {
        name: v.const_value
        for name, v in held.items()
        if v.const_value is not None and v.const_value.dtype != ir.DataType.STRING
    }
    for name in tensors:
        inits.pop(name)
    try:
        proto = ir.serde.serialize_model(graph.model)
    finally:
        inits.clear()
        inits.update(held)  # in their original order
    proto.graph.initializer.extend(
        onnx.TensorProto(name=name, data_type=t.dtype.value, dims=t.shape.numpy())
        for name, t in tensors.items()
    )
    return IrGraph(proto.graph, tensors)
