"""`Graph`: the value the load stage hands to every later stage."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Any

import onnx
import onnx_ir as ir

from onnxmtl.ir.shapes import ShapeT, shape_of
from onnxmtl.ir.units import LINEAR_OPS, Unit
from onnxmtl.ir.values import const_of, name_of

# onnxruntime 1.2x reads IR versions up to 10 at least; keep saved models loadable there.
MAX_IR_VERSION = 10

# Ops whose floating-point constant inputs are trained like weights (not shapes or scales).
_WEIGHT_CONSUMERS = {"Add", "Sub", "Mul", "Div", "PRelu", "MatMul", "Gemm", "Conv"}
_WEIGHT_CONSUMERS |= {"ConvTranspose", "Concat", "Where", "Expand"}


@dataclass
class Graph:
    """A normalised backbone cut at its feature output(s), with its units.

    Nodes are in topological order; every weight is an initializer read by one node; shapes
    are inferred for the concrete input size (a symbolic batch stays symbolic).
    """

    model: ir.Model  # the normalised onnx_ir model; its outputs are the feature values
    source: str  # the file (or ModelProto name) it came from, for messages
    input_name: str
    input_shape: ShapeT
    features: list[str]  # names of the feature output values
    units: list[Unit]
    producer: str
    opset: int
    ir_version: int
    original_op_counts: dict[str, int] = field(default_factory=dict)
    original_outputs: list[tuple[str, ShapeT | None]] = field(default_factory=list)
    adaptations: list[str] = field(default_factory=list)  # what load rewrote so that the
    # backbone trains at any size and batch (one line each, for `inspect`)
    static_batch: bool = False  # the file declares a fixed batch size
    batch_made_dynamic: bool = False  # ... which the load stage made symbolic

    @property
    def graph(self) -> ir.Graph:
        return self.model.graph

    @property
    def nodes(self) -> list[ir.Node]:
        return list(self.model.graph)

    @property
    def feature_shapes(self) -> list[ShapeT | None]:
        return [shape_of(v) for v in self.model.graph.outputs]

    def opset_of(self, domain: str) -> int:
        """The opset the model imports for `domain` ('' is the default ONNX domain)."""
        return self.model.opset_imports.get(domain or "", self.opset)

    def op_counts(self) -> dict[str, int]:
        """Histogram of op types in the normalised, cut graph."""
        return dict(Counter(n.op_type for n in self.model.graph).most_common())

    def trainable_weights(self) -> set[str]:
        """Initializers that train: every unit weight, and floating-point tensors of more than
        one element read as data by arithmetic ops (layer scales, position embeddings)."""
        names = {w for u in self.units for w in u.weights}
        for node in self.model.graph:
            if node.op_type not in _WEIGHT_CONSUMERS:
                continue
            for v in node.inputs:
                if (
                    v is not None
                    and v.const_value is not None
                    and v.dtype is not None
                    and v.dtype.is_floating_point()
                    and v.const_value.size > 1
                ):
                    names.add(name_of(v))
        return names

    @property
    def params(self) -> int:
        """Trainable weight elements (BatchNorm running statistics excluded)."""
        inits = self.model.graph.initializers
        unit_params = sum(u.params for u in self.units)
        unit_weights = {w for u in self.units for w in u.weights}
        loose = self.trainable_weights() - unit_weights
        return unit_params + sum(const_of(inits[n]).size for n in loose)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the units for one sample."""
        return sum(u.macs for u in self.units)

    @property
    def normalization(self) -> str:
        """'present' where the graph has about one normalisation per linear unit (after it, as
        in ResNet, or before it, as in DenseNet), 'folded' where it has none (a deployment
        export), 'partial' in between, 'none' without linear units."""
        linear = sum(u.op_type in LINEAR_OPS for u in self.units)
        norms = sum(u.norm is not None or u.op_type not in LINEAR_OPS for u in self.units)
        if not linear:
            return "none"
        if norms == 0:
            return "folded"
        return "present" if 2 * norms >= linear else "partial"

    def to_proto(self) -> onnx.ModelProto:
        """The normalised, cut graph as a ModelProto that onnxruntime loads."""
        return runnable_proto(self.model)

    def __deepcopy__(self, memo: dict[int, Any]) -> Graph:
        # copy.deepcopy of the linked IR recurses node by node and overflows the stack on
        # real backbones; onnx_ir's clone copies the structure in a loop and shares the
        # initializer tensors, which no stage after load writes
        others = {
            f.name: copy.deepcopy(getattr(self, f.name), memo)
            for f in fields(self)
            if f.name != "model"
        }
        copied = replace(self, model=self.model.clone(), **others)
        memo[id(self)] = copied
        return copied


def runnable_proto(model: ir.Model) -> onnx.ModelProto:
    """`model` as a ModelProto that onnxruntime loads: its IR version capped at the newest
    this onnxruntime reads."""
    return cap_ir_version(ir.serde.serialize_model(model))


def cap_ir_version(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto` itself, its IR version capped at the newest this onnxruntime reads, so that a
    file saved by a newer onnx loads in it."""
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    return proto
