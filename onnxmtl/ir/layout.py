"""Channels-last image inputs turned channels-first.

TensorFlow and Keras exports (tf2onnx without `--inputs-as-nchw`) and PyTorch models that
permute their input take (N, H, W, C) images. Every later stage feeds (N, C, H, W) batches, and
the derived model's export takes them too, so the input becomes channels-first and the
transpose that the graph applies to it disappears.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxmtl.ir.shapes import shape_of
from onnxmtl.ir.values import dims_of, name_of

TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


def is_channels_last(value: ir.Value) -> bool:
    """Whether the rank-4 image input `value` is (N, H, W, C): every consumer transposes it to
    (N, C, H, W), or the first convolution that reads it takes as many channels as its last
    dimension holds (and not as many as its second)."""
    consumers = [node for node, _ in value.uses()]
    if consumers and all(_is_transpose(n, TO_NCHW) for n in consumers):
        return True
    channels = _first_conv_channels(value)
    dims = dims_of(value)
    return channels is not None and dims[3] == channels and dims[1] != channels


def _first_conv_channels(value: ir.Value, max_nodes: int = 32) -> int | None:
    """The input channels of the first convolution downstream of `value` (breadth first,
    within `max_nodes` nodes), or None."""
    queue, seen = [value], 0
    while queue and seen < max_nodes:
        for node, _ in queue.pop(0).uses():
            seen += 1
            if node.op_type == "Conv":
                weight = node.inputs[1]
                if weight is None or weight.shape is None or not isinstance(weight.shape[1], int):
                    return None
                return weight.shape[1] * (node.attributes.get_int("group") or 1)
            queue.extend(node.outputs)
    return None


def to_channels_first(model: ir.Model, value: ir.Value) -> tuple[ir.Value, list[str]]:
    """Make a channels-last image input `value` channels-first under the same name: the
    graph's transposes to (N, C, H, W) read it directly, and any other consumer reads it
    through one transpose back to (N, H, W, C). Returns the input and one line for `inspect`
    (none when it already was channels-first)."""
    if not is_channels_last(value):
        return value, []
    graph = model.graph
    n, h, w, c = dims_of(value)
    before = shape_of(value)
    name = name_of(value)
    value.name = f"{name}.nhwc"
    nchw = ir.Value(name=name, shape=ir.Shape([n, c, h, w]), type=value.type)
    graph.inputs[graph.inputs.index(value)] = nchw
    back = ir.node("Transpose", [nchw], {"perm": list(TO_NHWC)}, name=f"{name}.to_nhwc")
    graph.insert_before(graph.node(0), back)
    back.outputs[0].shape, back.outputs[0].type = value.shape, value.type
    value.replace_all_uses_with(back.outputs[0])
    folded = 0
    for node, _ in list(back.outputs[0].uses()):
        if _is_transpose(node, TO_NCHW):
            node.outputs[0].replace_all_uses_with(nchw, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            folded += 1
    if not back.outputs[0].uses():
        graph.remove(back, safe=True)
    what = f"folded {folded} transpose(s) into it" if folded else "a transpose reads it"
    return nchw, [
        f"input '{name}' was channels-last {before}; it takes (N, C, H, W) images now "
        f"({what}), and so does the export"
    ]


def _is_transpose(node: ir.Node, perm: tuple[int, ...]) -> bool:
    return node.op_type == "Transpose" and tuple(node.attributes.get_ints("perm") or ()) == perm
