"""`lower`: the IR `Graph` as a trainable torch.fx GraphModule, op by op through the registry."""

from __future__ import annotations

import inspect
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from operator import getitem

from onnx2torch.onnx_graph import ValueType
from torch import Tensor, fx, nn
from torch.nn import init

import onnxmtl.lower.ops  # noqa: F401  (registers our converters)
from onnxmtl.errors import LoweringError, UnsupportedOpError
from onnxmtl.ir import Graph, values
from onnxmtl.lower.registry import find_converter
from onnxmtl.lower.source import converter_graph


def _keep(tensor: Tensor, *args: object, **kwargs: object) -> Tensor:
    return tensor


@contextmanager
def _skip_random_init() -> Iterator[None]:
    """Converters build layers whose random initialisation is overwritten by the ONNX weights
    at once; skipping it saves most of the lowering time of large backbones."""
    saved = init.kaiming_uniform_, init.uniform_
    init.kaiming_uniform_ = init.uniform_ = _keep
    try:
        yield
    finally:
        init.kaiming_uniform_, init.uniform_ = saved


def find_unsupported(graph: Graph) -> list[tuple[str, str, int, list[str]]]:
    """Every (domain, op, opset) of the graph that no converter handles, with its node names."""
    missing: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    for node in graph.nodes:
        opset = graph.opset_of(node.domain)
        if find_converter(node.domain, node.op_type, opset) is None:
            missing[(node.domain, node.op_type, opset)].append(values.node_name(node))
    return [(d, op, v, names) for (d, op, v), names in sorted(missing.items())]


class Weights(nn.Module):
    """Holds the graph's weights: trainable ones as parameters, the rest as buffers."""

    def forward(self) -> None:
        raise RuntimeError("Weights is a container and is never called")


def attr_name(onnx_name: str, taken: set[str]) -> str:
    """A unique Python identifier derived from an ONNX name."""
    base = re.sub(r"\W", "_", onnx_name).strip("_") or "node"
    if base[0].isdigit():
        base = f"n_{base}"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def lower(graph: Graph) -> fx.GraphModule:
    """Build a GraphModule computing `graph`'s feature outputs from its image input.

    Raises UnsupportedOpError listing every op without a converter before building anything.
    The module's `onnx_names` maps each submodule and weight attribute to its ONNX name, and
    `onnx_values` maps each ONNX value name to the fx node computing it.
    """
    unsupported = find_unsupported(graph)
    if unsupported:
        raise UnsupportedOpError(graph.source, unsupported)
    onnx_graph = converter_graph(graph)
    trainable = graph.trainable_weights()
    root, weights = nn.Module(), Weights()
    root.add_module("weights", weights)
    fx_graph = fx.Graph()
    taken = {"weights"}
    onnx_names: dict[str, str] = {}
    env: dict[str, fx.Node] = {}
    weight_nodes: dict[str, fx.Node] = {}

    for name in onnx_graph.input_values:
        env[name] = fx_graph.placeholder(attr_name(name, taken))

    def weight(value_name: str) -> fx.Node:
        if value_name not in weight_nodes:
            tensor = onnx_graph.initializers[value_name].to_torch()
            attr = attr_name(value_name, taken)
            if value_name in trainable and tensor.is_floating_point():
                weights.register_parameter(attr, nn.Parameter(tensor))
            else:
                weights.register_buffer(attr, tensor)
            onnx_names[f"weights.{attr}"] = value_name
            weight_nodes[value_name] = fx_graph.get_attr(f"weights.{attr}")
        return weight_nodes[value_name]

    for node_name, node in onnx_graph.nodes.items():
        opset = graph.opset_of(node.domain)
        converter = find_converter(node.domain, node.operation_type, opset)
        assert converter is not None  # find_unsupported found one for every node
        try:
            with _skip_random_init():
                module, mapping = converter(node, onnx_graph)
        except LoweringError:
            raise
        except Exception as exc:
            raise LoweringError(
                f"{graph.source}: node '{node_name}' ({node.operation_type}-{opset}) could not "
                f"be lowered: {exc}. Re-export with another opset or register a converter "
                "with onnxmtl.lower.register_converter."
            ) from exc
        attr = attr_name(node_name, taken)
        root.add_module(attr, module)
        onnx_names[attr] = node.name or node_name

        args: list[fx.Node | None] = []
        for value_name in mapping.inputs:
            kind = onnx_graph.value_type(value_name)
            if kind == ValueType.GRAPH_INITIALIZER:
                args.append(weight(value_name))
            elif kind == ValueType.EMPTY:
                args.append(None)
            else:
                args.append(env[value_name])
        kwargs: dict[str, fx.node.Argument] = {}
        if None in args:
            first = args.index(None)
            params = list(inspect.signature(module.forward).parameters)[first : len(args)]
            kwargs = {p: a for p, a in zip(params, args[first:]) if a is not None}
            args = args[:first]
        out = fx_graph.call_module(attr, tuple(args), kwargs)
        outputs = node.output_values
        if len(outputs) == 1:
            env[outputs[0]] = out
        else:
            for i, value_name in enumerate(outputs):
                if value_name:
                    env[value_name] = fx_graph.call_function(getitem, (out, i))

    results = [env[name] for name in graph.features]
    fx_graph.output(results[0] if len(results) == 1 else tuple(results))
    module = fx.GraphModule(root, fx_graph)
    # plain attributes (nn.Module.__setattr__ stores them so too), read through the accessors below
    vars(module).update(
        onnx_names=onnx_names, onnx_values={name: node.name for name, node in env.items()}
    )
    return module


def onnx_names(lowered: fx.GraphModule) -> dict[str, str]:
    """The ONNX name of each submodule and weight attribute of a module `lower` built."""
    names: dict[str, str] = vars(lowered)["onnx_names"]
    return names


def onnx_values(lowered: fx.GraphModule) -> dict[str, str]:
    """The fx node computing each ONNX value, by name, in a module `lower` built."""
    values: dict[str, str] = vars(lowered)["onnx_values"]
    return values
