"""Pooling that is global only at the declared input size, made global at every size.

Exporters write a classifier's global average pooling as a fixed window when the model was
traced at one size (torchvision-era `AvgPool2d(7)`, Keras' `AveragePooling2D(7)`, old
zoo models). At the declared size the window covers the whole feature map; at any other size
it no longer does, and the classifier behind it fails on a feature map of the wrong size.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxmtl.errors import ShapeError
from onnxmtl.ir.shapes import infer_shapes

GLOBAL_OF = {
    "AveragePool": "GlobalAveragePool",
    "MaxPool": "GlobalMaxPool",
    "LpPool": "GlobalLpPool",
}


def globalize_pools(model: ir.Model, label: str) -> list[str]:
    """Replace every pooling whose window is exactly its input's spatial size at the declared
    input size (no padding, no dilation, one output) by the global pooling it computes there.
    Call it before the input size changes. Returns one line per replaced node, for `inspect`;
    nothing is changed where the declared size is symbolic or shapes cannot be inferred at it
    (a later inference reports the latter)."""
    graph = model.graph
    candidates = [n for n in graph if n.op_type in GLOBAL_OF and n.domain in ("", "ai.onnx")]
    if not candidates:
        return []
    try:
        infer_shapes(model, label)
    except ShapeError:
        return []
    notes = []
    for node in candidates:
        window = _whole_window(node)
        if window is None:
            continue
        p = node.attributes.get_int("p")
        replacement = ir.node(
            GLOBAL_OF[node.op_type],
            inputs=[node.inputs[0]],
            attributes={"p": p} if p is not None else None,
            name=node.name,
        )
        old, new = node.outputs[0], replacement.outputs[0]
        new.shape = old.shape
        if old.dtype is not None:
            new.dtype = old.dtype
        graph.insert_before(node, replacement)
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        new.name = old.name
        size = "x".join(str(d) for d in window)
        notes.append(
            f"{node.op_type} '{node.name}' ({size}, its input's size at the declared input size) "
            f"runs as {GLOBAL_OF[node.op_type]}, so the backbone runs at any input size"
        )
    return notes


def _whole_window(node: ir.Node) -> tuple[int, ...] | None:
    """The window of `node` when it covers its input's whole static spatial size without
    padding or dilation, else None."""
    if len(node.outputs) != 1 or node.inputs[0] is None or node.inputs[0].shape is None:
        return None
    spatial = list(node.inputs[0].shape)[2:]
    kernel = node.attributes.get_ints("kernel_shape")
    if not spatial or kernel is None or list(kernel) != spatial:
        return None
    sizes = [d for d in spatial if isinstance(d, int)]
    if len(sizes) != len(spatial):
        return None
    if any(node.attributes.get_ints("pads") or []):
        return None
    if any(d != 1 for d in node.attributes.get_ints("dilations") or []):
        return None
    if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    return tuple(sizes)
