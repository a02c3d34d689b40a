"""Choose the feature output(s) of a backbone and cut away what follows them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxmtl.errors import FeatureError
from onnxmtl.ir.graph import runnable_proto
from onnxmtl.ir.reference import outputs_at
from onnxmtl.ir.shapes import ShapeT, known_shape, shape_of, shapes_at_batch
from onnxmtl.ir.tokens import Size, follows_image, token_grid
from onnxmtl.ir.values import name_of
from onnxmtl.runtime import ORT_ERRORS, quiet, session

Shapes = dict[str, ShapeT]  # values' shapes by name


def image_size(graph: ir.Graph) -> Size:
    """The (H, W) of the graph's image input, None where symbolic."""
    images = [v for v in graph.inputs if not v.is_initializer()]
    shape = shape_of(images[0]) if images else None
    if shape is None or len(shape) != 4:
        return None
    h, w = shape[2:]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def sequence_shapes(model: ir.Model, image: ir.Value, batch: int, label: str) -> Shapes:
    """The shapes `auto_features` reads: every value's at a concrete `batch`
    (`shapes_at_batch`), and where onnx's data propagation leaves the sizes of a sequence
    unknown (the tokens after a class token's Expand), the sizes onnxruntime gives it on a
    batch of zeros."""
    shapes = shapes_at_batch(model, image, batch, label)
    unsized = [
        name
        for name, shape in shapes.items()
        if len(shape) == 3 and not all(isinstance(d, int) for d in shape[1:])
    ]
    if not unsized:
        return shapes
    proto = outputs_at(runnable_proto(model), unsized)
    dtype = image.dtype.numpy() if image.dtype is not None else np.dtype(np.float32)
    zeros = np.zeros([batch, *(int(d) for d in known_shape(image)[1:])], dtype)
    try:
        sess = session(proto, ["CPUExecutionProvider"])
        ran = sess.run(unsized, {name_of(image): zeros}, quiet())
    except ORT_ERRORS:  # a sequence of unknown size is not read as tokens
        return shapes
    return {**shapes, **{n: tuple(a.shape) for n, a in zip(unsized, ran, strict=True)}}


def _is_feature_map(value: ir.Value, image: Size = None) -> bool:
    shape = shape_of(value)
    if shape is None or len(shape) != 4 or value.dtype is None:
        return False
    if not value.dtype.is_floating_point():
        return False
    c, h, w = shape[1:]
    if not (isinstance(c, int) and isinstance(h, int) and isinstance(w, int)):
        return False
    return c > 1 and h * w > 1 and follows_image(h, w, image)


def _is_feature(value: ir.Value, image: Size, last_map: ir.Value | None, shapes: Shapes) -> bool:
    """A feature map, or a token sequence laid out on a grid no finer than the last map's
    (its token count read from `shapes` where the symbolic batch leaves it unknown)."""
    if _is_feature_map(value, image):
        return True
    shape = shapes.get(name_of(value)) or shape_of(value)
    if last_map is None or shape is None or value.dtype is None:
        return False
    grid = token_grid(shape, image) if value.dtype.is_floating_point() else None
    if grid is None or grid[1:] > tuple(known_shape(last_map)[2:]):
        return False
    return _transposed_since(value, last_map)


def _transposed_since(value: ir.Value, last_map: ir.Value) -> bool:
    """Whether a Transpose lies between `last_map` and `value` (over the float values they
    are computed from): tokens are channels last, while a map flattened as it is, (N, C,
    H*W), as a classifier's mean over positions reads it, has the same rank."""
    todo, seen = [value], {id(value)}
    while todo:
        node = todo.pop().producer()
        if node is None:
            continue
        if node.op_type == "Transpose":
            return True
        for v in node.inputs:
            if v is None or v.const_value is not None or v is last_map or id(v) in seen:
                continue
            if v.dtype is not None and v.dtype.is_floating_point():
                seen.add(id(v))
                todo.append(v)
    return False


def _through_values(graph: ir.Graph, shapes: Shapes | None = None) -> list[ir.Value]:
    """Every computed value through which every path to the output runs and that a head can
    read, in topological order: an (N, C, H, W) map, H*W > 1, or an (N, T, C) token sequence
    on a grid (`token_grid`). Found by a sweep in topological order: after its producer runs,
    it is the only live float tensor (an integer tensor only carries shapes, such as a batch
    size read for a final Reshape)."""
    image = image_size(graph)
    nodes = list(graph)
    last_use: dict[int, int] = {}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            if v is not None:
                last_use[id(v)] = i
    for v in graph.outputs:
        last_use[id(v)] = len(nodes)

    def float_tensor(v: ir.Value) -> bool:
        return v.const_value is None and v.dtype is not None and v.dtype.is_floating_point()

    live: set[int] = {id(v) for v in graph.inputs if float_tensor(v)}
    values = {id(v): v for v in graph.inputs}
    found: list[ir.Value] = []
    last_map: ir.Value | None = None
    for i, node in enumerate(nodes):
        for out in node.outputs:
            values[id(out)] = out
            if float_tensor(out) and id(out) in last_use:
                live.add(id(out))
            if _is_feature_map(out, image):
                last_map = out
        live = {v for v in live if last_use.get(v, -1) > i}
        if len(live) == 1:
            (only,) = live
            value = values[only]
            new = not found or found[-1] is not value
            feature = _is_feature(value, image, last_map, shapes or {})
            if new and value.producer() is not None and feature:
                found.append(value)
    return found


def auto_features(graph: ir.Graph, label: str, shapes: Shapes | None = None) -> str:
    """The last (N, C, H, W) value, H*W > 1, or (N, T, C) token sequence on a grid, through
    which every path to the output runs.

    This is the input of the global pooling, flatten or token mean that starts a classifier,
    and the output itself for a fully convolutional backbone. A token sequence is laid out as
    a map by `tokens.tokens_to_map` once the graph is cut. `shapes` (`sequence_shapes`)
    give the token counts that a symbolic batch leaves unknown.
    """
    if len(graph.outputs) != 1:
        names = ", ".join(str(v.name) for v in graph.outputs)
        raise FeatureError(
            f"{label}: features='auto' needs a model with one output, found {len(graph.outputs)} "
            f"({names}); name the feature value(s) with --features NAME[,NAME...]."
        )
    found = _through_values(graph, shapes)
    if not found:
        raise FeatureError(
            f"{label}: found no (N, C, H, W) feature map or (N, T, C) token grid through which "
            "the whole model passes; "
            "name the feature value(s) with --features NAME[,NAME...] (`onnxmtl inspect` lists "
            "the values)."
        )
    return name_of(found[-1])


def early_feature(graph: ir.Graph, input_height: int, stride: int, label: str) -> ir.Value:
    """The last value through which every path runs whose height is at least `input_height`
    / `stride` (rounded up), and larger than the graph's last output's: the low-level map a
    decoder head (DeepLabv3+ style) reads beside the deep one. A Pad's output is passed over:
    its border lies outside the image."""
    last = shape_of(graph.outputs[-1])
    last_height = last[2] if last is not None and len(last) == 4 else None
    wanted = -(-input_height // stride)
    early = [
        v
        for v in _through_values(graph)
        if _is_feature_map(v)
        and (node := v.producer()) is not None
        and node.op_type != "Pad"
        and isinstance(h := known_shape(v)[2], int)
        and h >= wanted
        and (not isinstance(last_height, int) or h > last_height)
    ]
    if not early:
        raise FeatureError(
            f"{label}: found no feature map of at least {wanted} rows (1/{stride} of the "
            f"input's {input_height}) through which the whole model passes, for a head that "
            "reads an early map; name the early and the last feature values with --features "
            "EARLY,LAST, or pick a head that reads the last map only."
        )
    return early[-1]


def cut_at(graph: ir.Graph, names: Sequence[str], label: str) -> list[ir.Value]:
    """Make the values called `names` the graph's outputs; everything after them goes later."""
    by_name = {name_of(out): out for node in graph for out in node.outputs}
    missing = [n for n in names if n not in by_name]
    if missing:
        image = image_size(graph)
        candidates = [name for name, v in by_name.items() if _is_feature_map(v, image)][-5:]
        raise FeatureError(
            f"{label}: no value named {', '.join(repr(n) for n in missing)}; feature maps near "
            f"the end of the graph are: {', '.join(candidates)} (`onnxmtl inspect --values` "
            "lists all)."
        )
    outputs = [by_name[n] for n in names]
    for out in outputs:
        if shape_of(out) is None:
            raise FeatureError(f"{label}: feature value '{out.name}' has an unknown shape.")
    graph.outputs.clear()
    graph.outputs.extend(outputs)
    return outputs


def feature_maps(graph: ir.Graph) -> list[tuple[str, ShapeT]]:
    """Every (N, C, H, W) value with H*W > 1 on a grid that follows the image, in
    topological order: the candidate features."""
    image = image_size(graph)
    return [
        (name_of(out), known_shape(out))
        for node in graph
        for out in node.outputs
        if _is_feature_map(out, image)
    ]
