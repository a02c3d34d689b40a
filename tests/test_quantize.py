"""`onnxmtl quantize`: static INT8 of a run's model with every task's metrics measured by
onnxruntime before and after, nodes kept in float by measurement, latency side by side."""

from __future__ import annotations

import json

import onnx
import pytest

import onnxmtl
from onnxmtl.data import load_dataset
from onnxmtl.quantize import evaluate_onnx, quantize_model
from onnxmtl.run_folder import foreign_entries
from tests.helpers import assert_clean_error, run_cli

TINY = {
    "batch_size": 4,
    "warmup_steps": 1,
    "search_steps": 2,
    "post_train_steps": 2,
    "data": {"count": 24, "size": 32},
}


@pytest.fixture(scope="module")
def finished_run(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize") / "run"
    onnxmtl.run(
        tiny_export("legacy17"), "scenes", out, config=TINY, baselines=("all-shared",),
        bench_repeats=2, progress=False,
    )  # fmt: skip
    return out


def test_onnxruntime_metrics_equal_the_runs_own_evaluation(finished_run):
    results = json.loads((finished_run / "results.json").read_text())
    test = load_dataset("scenes", "test", **TINY["data"])
    tasks = test.tasks()
    got = evaluate_onnx(finished_run / "models" / "searched.onnx", test, tasks)
    expected = results["methods"]["searched"]["metrics"]
    for task, values in expected.items():
        for name, value in values.items():
            assert got[task][name] == pytest.approx(value, rel=1e-3, abs=1e-5), (task, name)


def test_quantize_a_run_records_each_tasks_metrics_and_both_latencies(finished_run):
    proc = run_cli("quantize", str(finished_run), "--count", "8", "--tolerance", "1000")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((finished_run / "quantize.json").read_text())
    deployed = json.loads((finished_run / "results.json").read_text())["deploy"]["model"]
    name = "searched" if deployed == "single-task" else deployed
    int8 = onnx.load(finished_run / "models" / f"{name}.int8.onnx")
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    assert record["within"] and record["excluded"] == [] and len(record["tries"]) == 1
    assert set(record["fp32"]) == set(record["int8"]) == {"seg", "depth", "normal"}
    assert set(record["latency_p50_ms"]) == {"1", "8"}
    assert "| seg | miou |" in proc.stdout and "speed-up" in proc.stdout
    assert foreign_entries(finished_run) == []  # both files listed: --force may clear them


def test_a_strict_tolerance_keeps_measured_nodes_in_float(finished_run, tmp_path):
    test = load_dataset("scenes", "test", **TINY["data"])
    model = finished_run / "models" / "all-shared.onnx"
    result = quantize_model(
        model, tmp_path / "q.onnx", test, test, test.tasks(), count=8, tolerance=0.0,
        max_tries=3,
    )  # fmt: skip
    counts = [t["excluded"] for t in result.tries]
    assert counts[0] == 0 and counts == sorted(counts)  # 0, then 1, 2, 4 ... kept in float
    if not result.within:  # every try that failed the tolerance made room for another
        assert len(result.tries) == 4 or len(result.excluded) == counts[-1]
    names = {n.name for n in onnx.load(model).graph.node}
    assert set(result.excluded) <= names
    quantized = onnx.load(tmp_path / "q.onnx")
    dq_inputs = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    for node in quantized.graph.node:  # an excluded node reads float weights
        if node.name in result.excluded:
            assert node.input[1] not in dq_inputs


def test_quantize_bad_input_is_one_line(tmp_path, finished_run):
    assert_clean_error(run_cli("quantize", str(tmp_path)), "not a finished run")
    assert_clean_error(
        run_cli("quantize", str(finished_run / "models" / "searched.onnx")), "needs --data"
    )
    assert_clean_error(
        run_cli("quantize", str(finished_run), "--model", "nope"), "nope.onnx", "searched"
    )


def test_run_with_quantize_reports_int8_against_fp32(tiny_export, tmp_path):
    out = tmp_path / "run"
    config = {**TINY, "quantize": True, "quantize_count": 8, "quantize_tolerance": 1000.0}
    result = onnxmtl.run(
        tiny_export("legacy17"), "scenes", out, config=config, baselines=("all-shared",),
        bench_repeats=2, progress=False,
    )  # fmt: skip
    summary = result.results["quantize"]
    deployed = result.results["deploy"]["model"]
    assert summary["model"] == str(out / "models" / f"{deployed}.onnx")
    assert (out / "models" / f"{deployed}.int8.onnx").exists()
    assert json.loads((out / "quantize.json").read_text()) == summary
    report = (out / "report.md").read_text()
    assert f"## INT8 ({deployed})" in report and "| seg | miou |" in report
