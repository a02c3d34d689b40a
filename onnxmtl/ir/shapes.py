"""The image input, its concrete size, and shape inference over the whole graph."""

from __future__ import annotations

import re
from collections.abc import Sequence

import onnx
import onnx_ir as ir

from onnxmtl.errors import ModelFileError, ShapeError, first_line
from onnxmtl.ir.values import dims_of

Dim = int | str
ShapeT = tuple[Dim, ...]


def image_input(graph: ir.Graph, label: str) -> ir.Value:
    """The graph's single image input: a floating-point tensor of rank 4 (N, C, H, W)."""
    inputs = [v for v in graph.inputs if not v.is_initializer()]
    if not inputs:
        raise ModelFileError(f"{label}: the graph has no input; export it with an image input.")
    if len(inputs) > 1:
        names = ", ".join(f"{v.name} {shape_of(v)}" for v in inputs)
        raise ModelFileError(
            f"{label}: {len(inputs)} graph inputs ({names}); onnxmtl takes backbones with one "
            "image input. Export the backbone with a single (N, C, H, W) input."
        )
    value = inputs[0]
    if value.shape is None or len(value.shape) != 4:
        raise ModelFileError(
            f"{label}: input '{value.name}' has shape {shape_of(value)}, expected rank 4 "
            "(N, C, H, W). Export the backbone with a channels-first image input."
        )
    if value.dtype is None or not value.dtype.is_floating_point():
        raise ModelFileError(
            f"{label}: input '{value.name}' has type {value.dtype}, expected a float tensor."
        )
    return value


def shape_of(value: ir.Value) -> ShapeT | None:
    """The shape of `value` as a tuple of ints and symbol names, or None when unknown."""
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else str(d.value or "?") for d in value.shape)


def known_shape(value: ir.Value) -> ShapeT:
    """The shape of `value`, which must be known (a feature output, the image input)."""
    shape = shape_of(value)
    if shape is None:
        raise ShapeError(f"value '{value.name}' has an unknown shape.")
    return shape


def fix_input_shape(value: ir.Value, input_shape: Sequence[int] | None, label: str) -> None:
    """Give the image input concrete C, H and W, keeping a symbolic batch symbolic.

    `input_shape` (N, C, H, W) is needed where the model leaves H or W symbolic; where it is
    given for a model with static sizes it overrides H and W (fully convolutional backbones).
    """
    dims = dims_of(value)
    if input_shape is not None:
        if len(input_shape) != 4 or any(int(d) <= 0 for d in input_shape):
            raise ShapeError(
                f"input shape {tuple(input_shape)}: expected four positive sizes N,C,H,W "
                "(for example 1,3,224,224)."
            )
        if isinstance(dims[1], int) and dims[1] != input_shape[1]:
            raise ShapeError(
                f"{label}: input '{value.name}' has {dims[1]} channels but --input-shape gives "
                f"{input_shape[1]}; use {dims[1]}."
            )
        dims[1:] = [int(d) for d in input_shape[1:]]
        if isinstance(dims[0], int):
            dims[0] = int(input_shape[0])
    symbolic = [name for d, name in zip(dims[1:], "CHW") if not isinstance(d, int)]
    if symbolic:
        raise ShapeError(
            f"{label}: input '{value.name}' has symbolic {', '.join(symbolic)} "
            f"{shape_of(value)}; give a concrete size, e.g. --input-shape 1,3,224,224 "
            "(input_shape=(1, 3, 224, 224) in Python)."
        )
    value.shape = ir.Shape(dims)


# onnx's own words: "... (op_type:Add, node name: /blocks.0/Add): [ShapeInferenceError] why"
_FAILED_NODE = re.compile(r"\(op_type:(\w+), node name: ([^)]*)\): \[\w+\] ([^\n]*)")


def inference_failure(exc: Exception) -> str:
    """One line saying where onnx's shape inference failed and why: the first failing node
    and onnx's reason where its message names one, else its first line."""
    text = str(exc).strip()
    found = _FAILED_NODE.search(text)
    if found is None:
        return f"shape inference failed ({first_line(exc)})"
    op, node, why = found.groups()
    return f"shape inference fails at {op} node '{node}': {why.strip().rstrip('.')}"


def infer_shapes(model: ir.Model, label: str) -> None:
    """Recompute every intermediate shape from the input shape and the weights."""
    graph = model.graph
    for node in graph:
        for out in node.outputs:
            out.shape = None
    inferred = _inferred(shape_only_proto(model), label)
    known = {vi.name: vi for vi in inferred.graph.value_info}
    known.update({vi.name: vi for vi in inferred.graph.output})
    for node in graph:
        for out in node.outputs:
            info = known.get(out.name)
            if info is None or not info.type.HasField("tensor_type"):
                continue
            typed = ir.serde.deserialize_value_info_proto(info, None)
            if typed.shape is not None:
                out.shape = typed.shape
            if typed.dtype is not None:
                out.dtype = typed.dtype


def _inferred(proto: onnx.ModelProto, label: str, strict: bool = True) -> onnx.ModelProto:
    """`proto` with every shape onnx's inference (with data propagation) finds; a ShapeError
    naming the first node where it fails (lenient: where it gives up altogether)."""
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=strict, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        why = inference_failure(exc)
        raise ShapeError(f"{label}: {why}.", reason=why) from exc


def shape_only_proto(model: ir.Model, max_elements: int = 1024) -> onnx.ModelProto:
    """Serialise `model` with large weights declared as inputs: inference needs their shapes,
    not their data, and copying hundreds of MB per round would dominate load time."""
    inits = model.graph.initializers
    large = {
        n: v
        for n, v in inits.items()
        if v.const_value is not None and v.const_value.size > max_elements
    }
    for name in large:
        inits.pop(name)
    try:
        proto = ir.serde.serialize_model(model)
    finally:
        for value in large.values():
            model.graph.register_initializer(value)
    proto.graph.input.extend(ir.serde.serialize_value(v) for v in large.values())
    return proto


def shapes_at_batch(model: ir.Model, image: ir.Value, batch: int, label: str) -> dict[str, ShapeT]:
    """Every computed value's shape with the `image` input's batch fixed at `batch`, by name.

    Where the batch is symbolic, onnx's inference cannot divide by it, so a Reshape to -1
    (the token count of a subsampled sequence) leaves a size unknown that does not depend on
    the batch; at a concrete batch it is known, and sizes that disagree there (a constant
    held for another input size) fail it: a ShapeError naming the node. Only the sizes beside
    the batch may be read from these shapes."""
    return shapes_with(model, image, {0: batch}, label)


def shapes_with(
    model: ir.Model, image: ir.Value, sizes: dict[int, int], label: str, strict: bool = True
) -> dict[str, ShapeT]:
    """Every computed value's shape with the `image` input's axes fixed at `sizes` (axis:
    size), by name, "?" where a size stays unknown. Strict, a ShapeError names the first node
    where inference fails; lenient, inference stops there (nothing where it gives up)."""
    proto = shape_only_proto(model)
    for value in proto.graph.input:
        if value.name == image.name:
            dims = value.type.tensor_type.shape.dim
            for axis, size in sizes.items():
                dims[axis].ClearField("dim_param")
                dims[axis].dim_value = size
    del proto.graph.value_info[:]
    try:
        inferred = _inferred(proto, label, strict)
    except ShapeError:
        if strict:
            raise
        return {}
    return {
        info.name: tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in info.type.tensor_type.shape.dim
        )
        for info in [*inferred.graph.value_info, *inferred.graph.output]
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape")
    }
