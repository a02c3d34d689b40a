"""The CLI: JSON output, exit codes, and one-line errors on bad input (no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from torch import nn

from onnxmtl.cli import main
from onnxmtl.derived import load_derived
from onnxmtl.lower import registry
from onnxmtl.lower.ops.common import result
from tests.helpers import assert_clean_error, image, make_model, rand, run_cli


def test_verify_json_on_a_real_export(tiny_export):
    proc = run_cli("verify", str(tiny_export("legacy17")), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["ok"] is True and info["max_rel_diff"] <= 1e-4
    assert info["units"] == 7 and info["params"] > 0 and len(info["features"]) == 1
    assert {"model", "max_abs_diff"} <= info.keys()


def test_inspect_json_reports_units_features_and_normalisation(tiny_export):
    proc = run_cli("inspect", str(tiny_export("dynamo", fold_bn=True)), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["normalization"] == "folded"
    assert info["units"] == 7 and info["unsupported"] == []
    assert info["features"][0]["shape"][1:] == [16, 16, 16]
    assert info["opset"] >= 18 and info["ops"]["Conv"] == 7


def test_inspect_values_lists_candidate_features(tiny_export):
    proc = run_cli("inspect", str(tiny_export("legacy13")), "--values", "--json")
    maps = json.loads(proc.stdout)
    assert len(maps) >= 7 and all(len(m["shape"]) == 4 for m in maps)


def test_verify_exits_1_when_the_lowering_is_wrong(tiny_export, capsys):
    """A deliberately wrong Relu converter must be caught by verify."""
    key = ("", "Relu", 14)
    saved = registry._REGISTRY.get(key)
    wrong = registry.register_converter("Relu", 14, override=True)
    wrong(lambda node, graph: result(node, nn.Identity()))
    try:
        code = main(["verify", str(tiny_export("legacy17")), "--json"])
    finally:
        if saved is None:
            registry._REGISTRY.pop(key)
        else:
            registry._REGISTRY[key] = saved
    info = json.loads(capsys.readouterr().out)
    assert code == 1 and info["ok"] is False and info["max_rel_diff"] > 1e-2


def _bad_models(tmp_path):
    conv_w = {"w": rand(4, 3, 3, 3)}
    out4 = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])
    two_inputs = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "z"], ["y"])],
        [image(), image("z", ("N", 4, 6, 6))],
        [out4],
        conv_w,
    )
    unsupported = make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
            helper.make_node("Shrink", ["c"], ["e"], name="shrink_a"),
            helper.make_node("ThresholdedRelu", ["e"], ["d"], name="thr_a"),
            helper.make_node("ThresholdedRelu", ["e"], ["d2"], name="thr_b"),
            helper.make_node("Add", ["d", "d2"], ["y"], name="add"),
        ],
        [image()],
        [out4],
        conv_w,
    )
    unsupported.opset_import[0].version = 17
    symbolic = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [image(shape=("N", 3, "H", "W"))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "h", "w"])],
        conv_w,
    )
    files = {}
    for name, model in [
        ("two_inputs", two_inputs),
        ("unsupported", unsupported),
        ("symbolic", symbolic),
    ]:
        files[name] = tmp_path / f"{name}.onnx"
        onnx.save(model, files[name])
    good = make_model([helper.make_node("Conv", ["x", "w"], ["y"])], [image()], [out4], conv_w)
    data = good.SerializeToString()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.onnx").write_text("this is not a model\n")
    empty = helper.make_model(helper.make_graph([], "empty", [image()], [image("x")]))
    empty.ir_version = 10
    onnx.save(empty, tmp_path / "empty.onnx")
    onnx.save(good, tmp_path / "good.onnx")
    return files


@pytest.mark.parametrize(
    ("case", "extra", "fragments"),
    [
        ("missing", [], ["missing.onnx", "no such file"]),
        ("directory", [], ["is a directory"]),
        ("text", [], ["text.onnx", "not a readable ONNX model"]),
        ("truncated", [], ["truncated.onnx", "truncated"]),
        ("empty", [], ["empty.onnx", "no nodes"]),
        ("two_inputs", [], ["2 graph inputs", "one image input"]),
        (
            "unsupported",
            [],
            ["2 unsupported op(s)", "Shrink-17", "shrink_a", "ThresholdedRelu-17", "thr_a, thr_b"],
        ),
        ("good", ["--features", "nope"], ["no value named 'nope'"]),
        ("symbolic", [], ["symbolic H, W", "--input-shape"]),
        ("good", ["--input-shape", "1,3,8"], ["--input-shape", "N,C,H,W"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_gives_one_line_error_and_exit_2(tmp_path, case, extra, fragments):
    _bad_models(tmp_path)
    path = {"missing": tmp_path / "missing.onnx", "directory": tmp_path}.get(case)
    path = path or tmp_path / f"{case}.onnx"
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli("verify", str(path), *extra)
    assert_clean_error(proc, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing is written"


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("--debug", "inspect", str(tmp_path / "missing.onnx"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ModelFileError" in proc.stderr


def test_symbolic_model_verifies_with_input_shape(tmp_path):
    _bad_models(tmp_path)
    proc = run_cli(
        "verify", str(tmp_path / "symbolic.onnx"), "--input-shape", "2,3,12,10", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["ok"] and info["input_shape"] == [2, 3, 12, 10]
    assert np.isfinite(info["max_abs_diff"])


TASKS_YAML = """tasks:
  - {name: seg, kind: segmentation, num_outputs: 5}
  - {name: label, kind: classification, num_outputs: 10}
"""


def test_compile_writes_a_supermodel_that_inspect_summarises(tiny_export, tmp_path):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(TASKS_YAML)
    out = tmp_path / "runs" / "super.pt"
    model = tiny_export("legacy17", fold_bn=True)
    proc = run_cli("compile", str(model), "--tasks", str(tasks), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["num_units"] == 7 and info["renormalized"] > 0
    assert [t["name"] for t in info["tasks"]] == ["seg", "label"]
    proc = run_cli("inspect", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["params"] == info["params"] and again["units"] == info["units"]
    proc = run_cli("inspect", str(model), "--tasks", str(tasks), "--no-renormalize")
    assert proc.returncode == 0 and "re-normalised 0" in proc.stdout


@pytest.mark.parametrize(
    ("tasks_text", "fragments"),
    [
        (None, ["tasks file not found"]),
        ("tasks: [{name: a, kind: depth, num_outputs: 3}]", ["tasks.yaml", "predicts 1 channel"]),
        ("tasks: [{name: a, kind: nope}]", ["unknown kind 'nope'"]),
    ],
    ids=["missing", "channels", "kind"],
)
def test_compile_bad_tasks_leave_nothing_behind(tiny_export, tmp_path, tasks_text, fragments):
    tasks = tmp_path / "tasks.yaml"
    if tasks_text is not None:
        tasks.write_text(tasks_text)
    out = tmp_path / "super.pt"
    proc = run_cli("compile", str(tiny_export("legacy17")), "--tasks", str(tasks), "-o", str(out))
    assert_clean_error(proc, *fragments)
    assert list(tmp_path.iterdir()) == ([tasks] if tasks_text is not None else [])


def test_inspect_rejects_a_file_that_is_not_a_supermodel(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_clean_error(run_cli("inspect", str(bad)), "x.pt", "not a supermodel")


RUN_CONFIG = """batch_size: 4
warmup_steps: 2
search_steps: 3
post_train_steps: 2
baseline_steps: 2
data: {count: 24, size: 32}
"""


def test_search_train_and_eval_commands(tiny_export, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXMTL_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "config.yaml"
    config.write_text(RUN_CONFIG)
    model = str(tiny_export("legacy17", fold_bn=True))
    run = tmp_path / "run"
    args = ["--data", "scenes", "--config", str(config), "--no-progress"]
    proc = run_cli("search", model, *args, "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "policy:" in proc.stdout and (run / "policy.json").exists()
    assert_clean_error(run_cli("search", model, *args, "--out", str(run)), "--resume", "--force")
    proc = run_cli("eval", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    stored = json.loads((run / "metrics.json").read_text())["test"]
    # the same model and images; the thread count may differ (a fair share of a busy machine),
    # which reorders float sums: equal within 1e-6 relative
    assert json.loads(proc.stdout) == {
        task: pytest.approx(values, rel=1e-6) for task, values in stored.items()
    }
    proc = run_cli("derive", str(run), "-o", str(tmp_path / "derived.pt"))
    assert proc.returncode == 0, proc.stderr
    searched = json.loads((run / "policy.json").read_text())
    assert load_derived(tmp_path / "derived.pt").policy.choices == searched["choices"]
    single = tmp_path / "single"
    proc = run_cli("train", model, *args, "--out", str(single), "--baseline", "single-task")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in single.iterdir() if p.is_dir()) == ["depth", "normal", "seg"]
    proc = run_cli("eval", str(single), "--json")
    assert set(json.loads(proc.stdout)) == {"seg", "depth", "normal"}


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--data", "imagenet"], ["imagenet", "not a dataset name"]),
        (["--data", "scenes", "--baseline", "best"], ["--baseline must be one of"]),
        (["--data", "scenes", "--config", "missing.yaml"], ["missing.yaml", "not found"]),
    ],
    ids=["dataset", "baseline", "config"],
)
def test_train_bad_options(tiny_export, tmp_path, extra, fragments):
    proc = run_cli("train", str(tiny_export("legacy17")), "--out", str(tmp_path / "r"), *extra)
    assert_clean_error(proc, *fragments)


def test_derive_export_and_bench_commands(tiny_export, tmp_path):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(TASKS_YAML)
    model = str(tiny_export("dynamo"))
    supermodel = tmp_path / "super.pt"
    assert run_cli("compile", model, "--tasks", str(tasks), "-o", str(supermodel)).returncode == 0
    files = {}
    for name, extra in [("mtl", ["--policy", "specific"]), ("seg", ["--task", "seg"])]:
        derived = tmp_path / f"{name}.pt"
        proc = run_cli("derive", str(supermodel), "-o", str(derived), *extra)
        assert proc.returncode == 0, proc.stderr
        files[name] = tmp_path / f"{name}.onnx"
        size = ["--image-size", "24,24"] if name == "seg" else []  # resized to 32x32 inside
        proc = run_cli("export", str(derived), "-o", str(files[name]), *size)
        assert proc.returncode == 0, proc.stderr
        assert "Conv nodes" in proc.stdout
        dims = onnx.load(files[name]).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims[1:]] == ([3, 24, 24] if size else [3, 32, 32])
    out = tmp_path / "bench"
    proc = run_cli(
        "bench",
        *map(str, files.values()),
        "--batch-sizes",
        "1,2",
        "--repeats",
        "3",
        "--out",
        str(out),
        "--json",
        "--no-memory",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {(r["model"], r["batch"]) for r in result["latency"]} == {
        (m, b) for m in ("mtl", "seg") for b in (1, 2)
    }
    assert result["models"]["mtl"]["outputs"] == ["seg", "label"]
    assert result["models"]["mtl"]["policy"]["choices"][0] == [1] * 7
    assert result["models"]["seg"]["params"] < result["models"]["mtl"]["params"]
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.json",
        "bench.md",
        "latency.png",
        "policy_mtl.png",
        "policy_seg.png",
    ]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["derive", "missing_run"], ["missing_run", "not found"]),
        (["export", "missing.pt"], ["missing.pt", "not found"]),
        (["bench", "missing.onnx"], ["missing.onnx", "not found"]),
        (["bench", "x.onnx", "--batch-sizes", "0"], ["--batch-sizes", "positive integers"]),
    ],
    ids=["derive", "export", "bench", "batch"],
)
def test_derive_export_bench_bad_input(tmp_path, args, fragments):
    proc = subprocess.run(
        [sys.executable, "-m", "onnxmtl.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert_clean_error(proc, *fragments)
    assert list(tmp_path.iterdir()) == []
