"""Helpers shared by the op converters."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from onnxmtl.errors import LoweringError


def const_input(node: OnnxNode, graph: OnnxGraph, index: int) -> torch.Tensor | None:
    """Input `index` of `node` as a tensor when it is a weight, None when absent or computed."""
    names = node.input_values
    if index >= len(names) or not names[index]:
        return None
    init = graph.initializers.get(names[index])
    return None if init is None else init.to_torch()


def require_const(node: OnnxNode, graph: OnnxGraph, index: int, what: str) -> torch.Tensor:
    """Like `const_input`, but a computed or missing input is a lowering error."""
    value = const_input(node, graph, index)
    if value is None:
        raise LoweringError(
            f"node '{node.unique_name}' ({node.operation_type}): {what} must be a constant; "
            "it is computed in the graph. Export the model with static shapes."
        )
    return value


def result(node: OnnxNode, module: torch.nn.Module, n_inputs: int = 1) -> OperationConverterResult:
    """A result whose module reads the node's first `n_inputs` inputs."""
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(
            inputs=tuple(node.input_values[:n_inputs]), outputs=node.output_values
        ),
    )


def unsupported_attr(node: OnnxNode, name: str, value: object, hint: str) -> LoweringError:
    return LoweringError(
        f"node '{node.unique_name}' ({node.operation_type}): {name}={value!r} is not supported; "
        f"{hint}"
    )
