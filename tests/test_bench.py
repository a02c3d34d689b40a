"""onnxruntime measurements: percentiles, ratios, memory in a fresh process, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import onnxmtl
from onnxmtl.benchmark import BenchResult, bench, resolve_providers, to_markdown
from onnxmtl.benchmark.bench import bound_call
from onnxmtl.benchmark.memory import peak_memory_mb
from onnxmtl.compiler import compile
from onnxmtl.derived import derive
from onnxmtl.errors import ConfigError
from onnxmtl.exporter import export
from onnxmtl.runtime import available_providers, session
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
    rows = result.latency
    assert [(r.model, r.batch) for r in rows] == [("mtl", 1), ("mtl", 3)]
    for r in rows:
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.throughput == pytest.approx(r.batch / r.p50_ms * 1e3)
    providers = result.settings.providers
    assert providers == ["CPUExecutionProvider"] or providers[0].startswith("CUDA")
    assert result.models["mtl"].outputs == ["d"]
    stored = result.to_dict()  # bench.json: plain JSON that reads back as the same result
    assert BenchResult.from_dict(json.loads(json.dumps(stored))) == result
    assert "peak_memory_mb" not in stored["models"]["mtl"]  # memory=False: not measured
    assert stored["latency"][0]["p50_ms"] == rows[0].p50_ms
    table = to_markdown(result)
    assert table.count("| 1.00 |") == 2  # every row against itself


def test_bench_errors(exports):
    with pytest.raises(ConfigError, match="batch is fixed at 1"):
        bench({"small": exports["small"]}, batch_sizes=[2], repeats=1, memory=False)
    with pytest.raises(ConfigError, match="auto, cpu, cuda or tensorrt"):
        resolve_providers("tpu")
    with pytest.raises(ConfigError, match="reference model 'x'"):
        to_markdown(bench([exports["mtl"]], repeats=1, memory=False), reference="x")


def test_bound_call_leaves_the_outputs_of_a_plain_run(exports):
    """I/O binding (inputs placed on the device once, outputs left there) computes what a
    plain run does, bit for bit."""
    sess = session(str(exports["mtl"]), ["CPUExecutionProvider"])
    feed = {"image": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype("f4")}
    call, binding = bound_call(sess, feed)
    call()
    (got,) = binding.copy_outputs_to_cpu()
    np.testing.assert_array_equal(got, sess.run(None, feed)[0])


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in available_providers(), reason="needs onnxruntime's CUDA provider"
)
def test_cuda_provider_with_io_binding(exports):
    result = bench({"mtl": exports["mtl"]}, provider="cuda", repeats=5, memory=False)
    assert result.settings.providers[0] == "CUDAExecutionProvider"
    assert result.settings.io_binding and result.latency[0].p50_ms > 0
    sess = session(str(exports["mtl"]), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    feed = {"image": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype("f4")}
    call, binding = bound_call(sess, feed)
    call()
    (got,) = binding.copy_outputs_to_cpu()
    want = session(str(exports["mtl"]), ["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_plots_are_pngs_and_leave_matplotlib_as_it_was(tmp_path):
    """The plots are written without pyplot: a user's backend survives `import onnxmtl` and
    making every plot."""
    script = f"""
import matplotlib, json
from pathlib import Path
matplotlib.use("svg")
from onnxmtl.benchmark import BenchResult, BenchSettings, LatencyRow, ModelInfo
from onnxmtl.benchmark import latency_bars, policy_heatmap
from onnxmtl.pipeline.report import search_curves
out = Path({str(tmp_path)!r})
models = {{"a": ModelInfo("a.onnx", "image", [1, 3, 8, 8], ["t"], 1, 1, 1, None)}}
settings = BenchSettings(["CPUExecutionProvider"], 1, True, True, 0, 1, [1])
result = BenchResult(models, [LatencyRow("a", 1, 1.0, 1.5, 1.5, 1.0, 1000.0)], settings)
latency_bars(result, out / "latency.png")
policy_heatmap({{"tasks": ["t", "u"], "choices": [[0, 1], [2, 0]]}}, out / "policy.png")
rows = [{{"phase": "warmup", "loss": 1.0}}, {{"phase": "search", "loss": 0.5, "tau": 1.0,
        "p_shared": 0.4, "p_specific": 0.3, "p_skip": 0.3, "grad_task": 1.0,
        "grad_sharing": 0.5, "grad_task_share": 0.66}}]
search_curves(rows, out / "curves.png")
print(matplotlib.get_backend())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "svg"
    for name in ("latency.png", "policy.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_openvino_times_the_same_files_after_checking_them_against_onnxruntime(exports):
    pytest.importorskip("openvino")
    result = bench(exports, batch_sizes=[1], repeats=3, memory=False, runtime="openvino")
    settings = result.settings
    assert settings.runtime == "openvino" and settings.providers[0].endswith("hint f32")
    assert set(settings.parity) == {"mtl", "small"}
    assert max(settings.parity.values()) <= 1e-4  # float32 in both runtimes
    assert {r.model for r in result.latency} == {"mtl", "small"}
    assert "openvino" in result.versions and "Checked against onnxruntime" in to_markdown(result)
    with pytest.raises(ConfigError, match="--runtime 'tvm'"):
        bench(exports, runtime="tvm")
    with pytest.raises(ConfigError, match="precision 'int4'"):
        bench(exports, runtime="openvino", precision="int4")
