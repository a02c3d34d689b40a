"""Reshape targets that hold a feature map's height and width, made to follow the map."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common

from onnxmtl.ir.normalize import add_initializer, fold_until_stable
from onnxmtl.ir.shapes import infer_shapes
from onnxmtl.ir.values import dims_of, name_of

Piece = tuple[ir.Value, list[int | None]]  # a 1-D part of a Reshape target, None where computed


def _spatial_positions(data: tuple, target: list[int | None]) -> dict[int, int]:
    """For a Reshape of a map `data` (N, C, ..., H, W) to `target` (None where an entry is
    computed): the target positions whose entries are the map's spatial sizes, aligned from
    the end (a channel shuffle's (N, g, C/g, H, W) and back), mapped to the map's position
    each one copies."""
    found: dict[int, int] = {}
    for back in range(1, min(len(data), len(target)) + 1):
        source, entry = len(data) - back, target[-back]
        if source < 2 or not isinstance(data[source], int) or data[source] != entry:
            break
        found[len(target) - back] = source
    return found


def target_pieces(shape: ir.Value) -> list[Piece] | None:
    """A Reshape target as its 1-D pieces: itself where constant, else the inputs of the
    Concat that joins it (a dynamic batch read from the input beside constant sizes), each
    with its entries (None where computed); None where the target is neither."""
    tensor = ir.convenience.get_const_tensor(shape)
    if tensor is not None:
        return [(shape, [int(e) for e in tensor.numpy().reshape(-1)])]
    node = shape.producer()
    if node is None or node.op_type != "Concat" or any(v is None for v in node.inputs):
        return None
    pieces: list[Piece] = []
    for value in node.inputs:
        assert value is not None  # checked above
        const = ir.convenience.get_const_tensor(value)
        if const is not None:
            pieces.append((value, [int(e) for e in const.numpy().reshape(-1)]))
        elif value.shape is not None and len(value.shape) == 1 and isinstance(value.shape[0], int):
            pieces.append((value, [None] * value.shape[0]))
        else:
            return None
    return pieces


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
    """Rewrite every Reshape whose target joins sizes it computes (the batch read from the
    input) to constant sizes that copy its map's height and width at the size the file
    declares, to read those from the map's shape instead, so that the graph runs at other
    sizes from its (N, C, H, W) `image` input; one line per Reshape rewritten, for
    `inspect`. Shapes are inferred at the declared size first. A wholly constant target is
    `grid.adapt_grid`'s to rewrite for the wanted size."""
    _fold_size_free(model, image, label)
    infer_shapes(model, label)
    graph = model.graph
    rewritten: list[str] = []
    for k, node in enumerate(list(graph)):
        if node.op_type != "Reshape" or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        data, shape = node.inputs[0], node.inputs[1]
        if data is None or data.shape is None or len(data.shape) < 4:
            continue
        pieces = target_pieces(shape)
        if pieces is None or len(pieces) == 1:  # a constant target: `grid.adapt_grid`'s
            continue
        target = [entry for _, entries in pieces for entry in entries]
        positions = _spatial_positions(tuple(data.shape), target)
        if not positions:
            continue
        size = ir.node("Shape", [data])
        graph.insert_before(node, size)
        parts: list[ir.Value] = []
        i = 0
        for value, entries in pieces:
            if None in entries:  # computed: kept as it is
                parts.append(value)
                i += len(entries)
                continue
            for entry in entries:
                name = f"spatial_reshape{k}_{i}"
                if i in positions:
                    index = add_initializer(graph, name, np.array([positions[i]], np.int64))
                    gathered = ir.node("Gather", [size.outputs[0], index])
                    graph.insert_before(node, gathered)
                    parts.append(gathered.outputs[0])
                else:
                    parts.append(add_initializer(graph, name, np.array([entry], np.int64)))
                i += 1
        joined = ir.node("Concat", parts, attributes={"axis": 0})
        graph.insert_before(node, joined)
        node.replace_input_with(1, joined.outputs[0])
        dims = ", ".join(
            f"dim {positions[j]}" if j in positions else ("?" if e is None else str(e))
            for j, e in enumerate(target)
        )
        rewritten.append(f"Reshape '{node.name}': target ({dims}) follows '{name_of(data)}'")
    return rewritten
