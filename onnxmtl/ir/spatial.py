"""Reshape targets that hold a feature map's height and width, made to follow the map."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from onnxmtl.ir.normalize import add_initializer, fold_until_stable
from onnxmtl.ir.shapes import infer_shapes
from onnxmtl.ir.values import dims_of, name_of


def _spatial_positions(data: tuple, target: np.ndarray) -> dict[int, int]:
    """For a Reshape of a map `data` (N, C, ..., H, W) to the constant `target`: the target
    positions whose entries are the map's spatial sizes, aligned from the end (a channel
    shuffle's (N, g, C/g, H, W) and back), mapped to the map's position each one copies."""
    found: dict[int, int] = {}
    for back in range(1, min(len(data), len(target)) + 1):
        source = len(data) - back
        if source < 2 or data[source] != int(target[-back]) or not isinstance(data[source], int):
            break
        found[len(target) - back] = source
    return found


def _fold_size_free(model: ir.Model, image: ir.Value, label: str) -> None:
    """Fold what the file computes from constants alone (a legacy export's Reshape target is
    Constant sizes joined by a Concat), the image's height and width made symbolic meanwhile
    so that nothing read from them is frozen at the declared size."""
    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    declared = image.shape
    image.shape = ir.Shape([*dims_of(image)[:2], "height", "width"])
    try:
        fold_until_stable(model, label)
    finally:
        image.shape = declared


def free_spatial_reshapes(model: ir.Model, image: ir.Value, label: str) -> list[str]:
    """Rewrite every Reshape whose constant target copies its map's height and width (at the
    size the file declares) to read them from the map's shape instead, so that the graph
    runs at other sizes from its (N, C, H, W) `image` input; one line per Reshape rewritten,
    for `inspect`. Shapes are inferred at the declared size first."""
    _fold_size_free(model, image, label)
    infer_shapes(model, label)
    graph = model.graph
    rewritten: list[str] = []
    for k, node in enumerate(list(graph)):
        if node.op_type != "Reshape" or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        data, shape = node.inputs[0], node.inputs[1]
        tensor = ir.convenience.get_const_tensor(shape)
        if data is None or data.shape is None or tensor is None or len(data.shape) < 4:
            continue
        target = tensor.numpy().astype(np.int64)
        positions = _spatial_positions(tuple(data.shape), target)
        if not positions:
            continue
        size = ir.node("Shape", [data])
        graph.insert_before(node, size)
        parts: list[ir.Value] = []
        for i, entry in enumerate(target):
            name = f"spatial_reshape{k}_{i}"
            if i in positions:
                index = add_initializer(graph, name, np.array([positions[i]], np.int64))
                gathered = ir.node("Gather", [size.outputs[0], index])
                graph.insert_before(node, gathered)
                parts.append(gathered.outputs[0])
            else:
                parts.append(add_initializer(graph, name, np.array([entry], np.int64)))
        joined = ir.node("Concat", parts, attributes={"axis": 0})
        graph.insert_before(node, joined)
        node.replace_input_with(1, joined.outputs[0])
        dims = ", ".join(
            f"dim {positions[i]}" if i in positions else str(e) for i, e in enumerate(target)
        )
        rewritten.append(f"Reshape '{node.name}': target ({dims}) follows '{name_of(data)}'")
    return rewritten
