"""Token sequences (N, T, C) of attention backbones, laid out as the (N, C, h, w) map that a
head reads.

LeViT, EfficientFormer's last stage and ViTs end on a sequence of tokens, one per cell of a
grid in row-major order, after up to `MAX_LEADING` extra tokens (a class token, a
distillation token). Their features are that grid, so that a dense head has a map to read.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from onnxmtl.ir.normalize import add_initializer
from onnxmtl.ir.shapes import ShapeT

MAX_LEADING = 2  # a class token and a distillation token (DeiT)
Size = tuple[int, int] | None  # the image's (H, W), None where symbolic

# A map's size along each axis is the image's over one stride, give or take what valid
# paddings and rounding take off: a few pixels (a valid 3x3 convolution takes 2), or a tenth
# of the size.
SLACK_PIXELS = 2.5
SLACK_SHARE = 0.1


def follows_image(h: int, w: int, image: Size) -> bool:
    """Whether an (h, w) grid is the image's (H, W) over one stride, the same for both axes
    (always, where the image's size is symbolic): how a feature map or a token grid is told
    from an attention tensor or a channels-last map."""
    if image is None:
        return True

    def near(size: int, exact: float) -> bool:
        return abs(size - exact) <= max(SLACK_PIXELS, SLACK_SHARE * exact)

    low = max(1, int(image[0] / (h * (1 + SLACK_SHARE) + SLACK_PIXELS)))
    high = int(image[0] / max(h * (1 - SLACK_SHARE) - SLACK_PIXELS, 0.5)) + 1
    return any(near(h, image[0] / s) and near(w, image[1] / s) for s in range(low, high + 1))


def token_grid(shape: ShapeT, image: Size) -> tuple[int, int, int] | None:
    """(leading, h, w) where an (N, T, C) shape holds `leading` extra tokens followed by an
    h x w grid, C > 1, that `follows_image`: the fewest extra tokens, then the grid nearest
    the image's aspect; None where the shape is not such a sequence or the image's size is
    unknown."""
    if image is None or len(shape) != 3 or not all(isinstance(d, int) for d in shape[1:]):
        return None
    tokens, channels = shape[1], shape[2]
    assert isinstance(tokens, int) and isinstance(channels, int)  # checked above
    if channels < 2:
        return None
    for leading in range(MAX_LEADING + 1):
        grids = _grids_of(tokens - leading, image)
        if grids:
            aspect = image[0] / image[1]
            h, w = min(grids, key=lambda g: abs(math.log(g[0] / g[1] / aspect)))
            return leading, h, w
    return None


def token_grids(tokens: int, image: Size) -> list[tuple[int, int, int]]:
    """Every (leading, h, w) where `tokens` are up to MAX_LEADING extra tokens followed by
    an h x w grid that `follows_image`, the fewest extra tokens first."""
    return [
        (leading, h, w)
        for leading in range(MAX_LEADING + 1)
        for h, w in _grids_of(tokens - leading, image)
    ]


def _grids_of(cells: int, image: Size) -> list[tuple[int, int]]:
    """Every h x w grid of `cells` positions, more than one, that `follows_image`."""
    grids = [(h, cells // h) for h in range(1, cells + 1) if cells % h == 0]
    return [(h, w) for h, w in grids if h * w > 1 and follows_image(h, w, image)]


def tokens_to_map(
    graph: ir.Graph, value: ir.Value, grid: tuple[int, int, int], name: str
) -> ir.Value:
    """Append the nodes that lay the (N, T, C) `value` out as an (N, C, h, w) map on `grid`
    (its extra leading tokens dropped) and return that map, named `name`."""
    leading, h, w = grid
    channels = value.shape[2] if value.shape is not None else None
    assert isinstance(channels, int)  # token_grid found the grid on a known shape
    x = value
    if leading:
        starts = add_initializer(graph, f"{name}_start", np.array([leading], np.int64))
        ends = add_initializer(graph, f"{name}_end", np.array([leading + h * w], np.int64))
        axes = add_initializer(graph, f"{name}_axes", np.array([1], np.int64))
        sliced = ir.node("Slice", [x, starts, ends, axes])
        graph.append(sliced)
        x = sliced.outputs[0]
    transposed = ir.node("Transpose", [x], attributes={"perm": [0, 2, 1]})
    graph.append(transposed)
    target = add_initializer(graph, f"{name}_shape", np.array([-1, channels, h, w], np.int64))
    reshaped = ir.node("Reshape", [transposed.outputs[0], target])
    graph.append(reshaped)
    out = reshaped.outputs[0]
    out.name = name
    return out
