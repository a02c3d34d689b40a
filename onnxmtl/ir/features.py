"""Choose the feature output(s) of a backbone and cut away what follows them."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from onnxmtl.errors import FeatureError
from onnxmtl.ir.shapes import ShapeT, known_shape, shape_of
from onnxmtl.ir.values import name_of


def _is_feature_map(value: ir.Value) -> bool:
    shape = shape_of(value)
    if shape is None or len(shape) != 4 or value.dtype is None:
        return False
    if not value.dtype.is_floating_point():
        return False
    c, h, w = shape[1:]
    if not (isinstance(c, int) and isinstance(h, int) and isinstance(w, int)):
        return False
    return c > 1 and h * w > 1


def _through_values(graph: ir.Graph) -> list[ir.Value]:
    """Every computed (N, C, H, W) value, H*W > 1, through which every path to the output
    runs, in topological order. Found by a sweep in topological order: after its producer
    runs, it is the only live float tensor (an integer tensor only carries shapes, such as a
    batch size read for a final Reshape)."""
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
    for i, node in enumerate(nodes):
        for out in node.outputs:
            values[id(out)] = out
            if float_tensor(out) and id(out) in last_use:
                live.add(id(out))
        live = {v for v in live if last_use.get(v, -1) > i}
        if len(live) == 1:
            (only,) = live
            value = values[only]
            new = not found or found[-1] is not value
            if new and _is_feature_map(value) and value.producer() is not None:
                found.append(value)
    return found


def auto_features(graph: ir.Graph, label: str) -> str:
    """The last (N, C, H, W) value, H*W > 1, through which every path to the output runs.

    This is the input of the global pooling or flatten that starts a classifier, and the output
    itself for a fully convolutional backbone.
    """
    if len(graph.outputs) != 1:
        names = ", ".join(str(v.name) for v in graph.outputs)
        raise FeatureError(
            f"{label}: features='auto' needs a model with one output, found {len(graph.outputs)} "
            f"({names}); name the feature value(s) with --features NAME[,NAME...]."
        )
    found = _through_values(graph)
    if not found:
        raise FeatureError(
            f"{label}: found no (N, C, H, W) feature map through which the whole model passes; "
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
        if (node := v.producer()) is not None
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
        candidates = [name for name, v in by_name.items() if _is_feature_map(v)][-5:]
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
    """Every (N, C, H, W) value with H*W > 1 in topological order: the candidate features."""
    return [
        (name_of(out), known_shape(out))
        for node in graph
        for out in node.outputs
        if _is_feature_map(out)
    ]
