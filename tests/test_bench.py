"""onnxruntime measurements: percentiles, ratios, memory in a fresh process, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import onnxmtl
from onnxmtl.benchmark import bench, resolve_providers, to_markdown
from onnxmtl.benchmark.memory import peak_memory_mb
from onnxmtl.compiler import compile
from onnxmtl.derived import derive
from onnxmtl.errors import ConfigError
from onnxmtl.exporter import export
from onnxmtl.tasks import Task


def big_weight_model(path, mb: int) -> None:
    """y = x @ W with a float32 W of about `mb` MB."""
    cols = mb * 1024 * 1024 // (4 * 256)
    weight = helper.make_tensor(
        "W", TensorProto.FLOAT, [256, cols], np.ones((256, cols), np.float32).tobytes(), raw=True
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_peak_memory_counts_the_model_not_the_parent(tmp_path):
    big_weight_model(tmp_path / "big.onnx", 64)
    ballast = torch.ones(200_000_000)  # 800 MB in this (parent) process
    peak = peak_memory_mb(str(tmp_path / "big.onnx"), (1, 256), ["CPUExecutionProvider"])
    del ballast
    assert 50 <= peak <= 400, peak


@pytest.fixture
def exports(tiny_export, tmp_path):
    model = compile(onnxmtl.load(tiny_export("legacy17")), [Task("d", "depth", head="conv1x1")])
    files = {"mtl": tmp_path / "a.onnx", "small": tmp_path / "b.onnx"}
    export(derive(model), files["mtl"])
    export(derive(model, tasks=["d"]), files["small"], batch=1)
    return files


def test_percentiles_throughput_and_ratios(exports):
    result = bench({"mtl": exports["mtl"]}, batch_sizes=[1, 3], repeats=7, memory=False)
    rows = result["latency"]
    assert [(r["model"], r["batch"]) for r in rows] == [("mtl", 1), ("mtl", 3)]
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput"] == pytest.approx(r["batch"] / r["p50_ms"] * 1e3)
    assert result["settings"]["providers"] == ["CPUExecutionProvider"] or result["settings"][
        "providers"
    ][0].startswith("CUDA")
    assert result["models"]["mtl"]["outputs"] == ["d"]
    table = to_markdown(result)
    assert table.count("| 1.00 |") == 2  # every row against itself


def test_bench_errors(exports):
    with pytest.raises(ConfigError, match="batch is fixed at 1"):
        bench({"small": exports["small"]}, batch_sizes=[2], repeats=1, memory=False)
    with pytest.raises(ConfigError, match="auto, cpu or cuda"):
        resolve_providers("tpu")
    with pytest.raises(ConfigError, match="reference model 'x'"):
        to_markdown(bench([exports["mtl"]], repeats=1, memory=False), reference="x")
