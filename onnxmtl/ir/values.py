"""Accessors for fields that onnx_ir types as optional but that a caller knows are present.

onnx_ir types a node's inputs as `Value | None` (an omitted optional input) and a value's
name, shape, dtype and constant as optional. Where the graph guarantees the field (a required
input, a named graph value, an initializer), these say so once and fail with a message that
names the value, rather than with an AttributeError on None further on.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxmtl.errors import ModelFileError


def required_input(node: ir.Node, index: int) -> ir.Value:
    """Input `index` of `node`, which its op requires."""
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        raise ModelFileError(f"node '{node.name}' ({node.op_type}) has no input {index}.")
    return value


def name_of(value: ir.Value) -> str:
    """The name of a graph value (onnx_ir names every value a graph holds)."""
    if value.name is None:
        producer = value.producer()
        where = f"node '{producer.name}'" if producer is not None else "the graph"
        raise ModelFileError(f"an output of {where} has no name.")
    return value.name


def dims_of(value: ir.Value) -> list[int | ir.SymbolicDim]:
    """The dims of a value whose shape is known (after shape inference)."""
    if value.shape is None:
        raise ModelFileError(f"value '{value.name}' has no known shape.")
    return list(value.shape)


def const_of(value: ir.Value) -> ir.TensorProtocol:
    """The tensor of an initializer or folded constant."""
    if value.const_value is None:
        raise ModelFileError(f"value '{value.name}' is not a constant.")
    return value.const_value


def node_name(node: ir.Node) -> str:
    """The name of a graph node (onnx_ir names every node a graph holds)."""
    if node.name is None:
        raise ModelFileError(f"a {node.op_type} node has no name.")
    return node.name
