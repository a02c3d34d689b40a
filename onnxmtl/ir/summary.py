"""What a loaded backbone is: file facts, ops, units, normalisation, features, as plain data
(for `--json`) and as text for the terminal (`onnxmtl inspect`)."""

from __future__ import annotations

from typing import Any

from onnxmtl.errors import op_label
from onnxmtl.ir.features import feature_maps
from onnxmtl.ir.graph import Graph

# (domain, op type, opset, node names) per op the lowering has no converter for, as
# `onnxmtl.lower.find_unsupported` gives them (the load stage does not know the converters).
Unsupported = list[tuple[str, str, int, list[str]]]

NORMALIZATION_TEXT = {
    "present": "present (BatchNorm/LayerNorm nodes kept: the backbone can train as is)",
    "partial": "partial (some units carry a normalisation)",
    "folded": "absent (folded into the convolutions or decomposed)",
    "none": "none (no linear units)",
}


def batch_text(graph: Graph) -> str:
    """How the file declares the batch size, and what loading did with it."""
    if graph.batch_made_dynamic:
        return "fixed in the file, made dynamic (checked on onnxruntime)"
    return "fixed in the file" if graph.static_batch else "dynamic"


def summarize(graph: Graph, unsupported: Unsupported) -> dict[str, Any]:
    """`graph` as JSON-ready data, with the ops in `unsupported`."""
    return {
        "model": graph.source,
        "producer": graph.producer,
        "opset": graph.opset,
        "ir_version": graph.ir_version,
        "input": {"name": graph.input_name, "shape": list(graph.input_shape)},
        "batch": batch_text(graph),
        "outputs": [{"name": n, "shape": list(s or ())} for n, s in graph.original_outputs],
        "nodes": sum(graph.original_op_counts.values()),
        "nodes_after_cut": len(graph.nodes),
        "ops": graph.original_op_counts,
        "units": len(graph.units),
        "params": graph.params,
        "macs": graph.macs,
        "normalization": graph.normalization,
        "adaptations": graph.adaptations,
        "features": [
            {"name": n, "shape": None if s is None else list(s)}
            for n, s in zip(graph.features, graph.feature_shapes)
        ],
        "unsupported": [
            {"domain": d or "ai.onnx", "op": op, "opset": v, "nodes": nodes}
            for d, op, v, nodes in unsupported
        ],
    }


def describe(graph: Graph, unsupported: Unsupported) -> str:
    """`graph` as a table for the terminal, one fact a line (shapes as the graph holds them)."""
    ops = ", ".join(f"{op} {n}" for op, n in graph.original_op_counts.items())
    lines = [
        f"model          {graph.source}",
        f"producer       {graph.producer or '-'}   opset {graph.opset}   IR {graph.ir_version}",
        f"input          {graph.input_name} {graph.input_shape}",
        f"batch          {batch_text(graph)}",
        *(f"output         {name} {shape}" for name, shape in graph.original_outputs),
        f"nodes          {sum(graph.original_op_counts.values())} ({len(graph.nodes)} after "
        "normalising and cutting)",
        f"ops            {ops}",
        f"units          {len(graph.units)}   params {graph.params:,}   "
        f"MACs {graph.macs / 1e6:,.1f} M per sample",
        f"normalisation  {NORMALIZATION_TEXT[graph.normalization]}",
        *(f"adapted        {line}" for line in graph.adaptations),
        *(
            f"features       {name} {shape}"
            for name, shape in zip(graph.features, graph.feature_shapes)
        ),
        *(
            f"unsupported    {op_label(d, op, v)}: {', '.join(nodes[:5])}"
            for d, op, v, nodes in unsupported
        ),
    ]
    if not unsupported:
        lines.append("unsupported    none")
    return "\n".join(lines)


def summarize_values(graph: Graph) -> list[dict[str, Any]]:
    """Every candidate feature map of `graph` (see `feature_maps`) as JSON-ready data."""
    return [{"name": n, "shape": list(s)} for n, s in feature_maps(graph.graph)]


def describe_values(graph: Graph) -> str:
    """Every candidate feature map of `graph`, one `name  shape` a line, each line ending in a
    newline (nothing at all when there is none)."""
    return "".join(f"{name}  {shape}\n" for name, shape in feature_maps(graph.graph))
