"""Test helpers: build small ONNX models by hand and compare with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxmtl
from onnxmtl.lower import lower
from onnxmtl.lower.verify import run_module
from onnxmtl.runtime import session

IR_VERSION = 10


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked ModelProto at `opset`, saved with an IR version onnxruntime reads."""
    graph = helper.make_graph(
        nodes,
        "test",
        inputs,
        outputs,
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    model = onnx.shape_inference.infer_shapes(model)  # fills the outputs' shapes
    onnx.checker.check_model(model)
    return model


def image(name: str = "x", shape=("N", 3, 8, 8)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def output(name: str = "y", elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None)


def lowered_vs_ort(model: onnx.ModelProto, x: np.ndarray, features=None) -> tuple[list, list]:
    """Outputs of the original model in onnxruntime and of the lowered IR in torch."""
    graph = onnxmtl.load(model, features=features)
    names = graph.features
    expected = session(model, ["CPUExecutionProvider"]).run(names, {graph.input_name: x})
    return expected, run_module(lower(graph), x)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_gradients_reach_every_parameter(module: torch.nn.Module, x: torch.Tensor) -> None:
    """Every parameter gets a finite gradient from a loss on every output."""
    module.train()
    out = module(x)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    sum((o.float() ** 2).mean() for o in outs).backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    bad = [n for n, p in module.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad[:5]}"
