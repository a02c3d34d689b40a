"""A backbone that also hands out an early, high-resolution map, for decoder heads."""

from __future__ import annotations

import copy

from onnxmtl.errors import FeatureError
from onnxmtl.ir.features import early_feature
from onnxmtl.ir.graph import Graph
from onnxmtl.ir.values import name_of

# DeepLabv3+ reads its low-level features at 1/4 of the input's resolution.
EARLY_STRIDE = 4


def with_early_feature(graph: Graph, stride: int = EARLY_STRIDE) -> Graph:
    """A copy of `graph` whose feature values are the early map (`early_feature`: the last
    value every path runs through at 1/`stride` of the input's height or finer) followed by
    its own. A graph that has several feature values already is returned as it is: its first
    is the early one."""
    if len(graph.features) > 1:
        return graph
    height = graph.input_shape[2]
    if not isinstance(height, int):
        raise FeatureError(
            f"{graph.source}: the input's height is symbolic; give the input size "
            "(--input-shape N,C,H,W) so that an early feature map can be chosen."
        )
    copied = copy.deepcopy(graph)
    value = early_feature(copied.graph, height, stride, graph.source)
    copied.graph.outputs.insert(0, value)
    copied.features = [name_of(value), *copied.features]
    return copied
