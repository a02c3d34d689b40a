"""`onnxmtl run`: the whole pipeline on a tiny backbone, its report, resuming, and the
README's API example."""

from __future__ import annotations

import json
import re
import shutil

import onnx
import pytest

import onnxmtl
from onnxmtl.pipeline import end_to_end as run_module
from onnxmtl.run_folder import foreign_entries
from tests.conftest import ROOT
from tests.helpers import assert_clean_error, run_cli

TINY = {
    "batch_size": 4,
    "warmup_steps": 2,
    "search_steps": 3,
    "post_train_steps": 2,
    "data": {"count": 24, "size": 32},
}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXMTL_CACHE", str(tmp_path / "cache"))


def test_run_writes_models_and_a_report_from_its_own_figures(tiny_export, tmp_path, cache):
    out = tmp_path / "run"
    budget = {"latency_budget_ms": 100.0, "latency_provider": "cpu"}  # met by any policy
    config = {**TINY, **budget, "latency_cache": str(tmp_path / "lat")}
    result = onnxmtl.run(
        tiny_export("legacy17"), "scenes", out, config=config, bench_repeats=3, progress=False
    )
    last_k = [f"{how}-last-{k}" for how in ("own", "skip") for k in (1, 2, 3)]
    names = ["searched", "all-shared", *last_k, "single-seg", "single-depth", "single-normal"]
    assert sorted(p.name for p in (out / "models").glob("*.onnx")) == sorted(
        f"{n}.onnx" for n in names
    )
    searched = onnx.load(out / "models" / "searched.onnx")
    assert [o.name for o in searched.graph.output] == ["seg", "depth", "normal"]
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(result.results))
    methods = results["methods"]
    assert methods["single-task"]["delta_m"] == 0 and methods["single-task"]["param_share"] == 1
    test_metrics = json.loads((out / "search" / "metrics.json").read_text())["test"]
    assert methods["searched"]["metrics"] == test_metrics
    assert {r["model"] for r in results["bench"]["latency"]} == set(names)
    report = (out / "report.md").read_text()
    assert f"| searched | {test_metrics['seg']['miou']:.4g} |" in report
    assert f"{methods['searched']['delta_m']:+.2f}" in report
    predicted = json.loads((out / "search" / "latency.json").read_text())["predicted_ms"]
    assert results["latency_budget"]["predicted_ms"] == predicted
    assert "Latency budget 100 ms at batch 1" in report and f"{predicted:.3f} ms" in report
    deploy = results["deploy"]
    val = {m: e["val_delta_m"] for m, e in methods.items()}
    assert val["single-task"] == 0
    assert set(val) == {"searched", "all-shared", "single-task", *last_k}
    for name in last_k:  # each hand-made policy was trained as itself
        policy = json.loads((out / "baselines" / name / "policy.json").read_text())
        assert methods[name]["policy"] == policy["method"] == name
        assert f"| {name} | {name} | {val[name]:+.2f} |" in report
    assert all(c["within_budget"] for c in deploy["candidates"])  # 100 ms: any model
    assert val[deploy["model"]] == max(val.values())
    assert f"Deploy **{deploy['model']}**" in report
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / image).stat().st_size > 1000, image
    assert foreign_entries(out) == []  # every file is on a file list: --force could clear it
    kept = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = onnxmtl.run(tiny_export("legacy17"), "scenes", out, config=config, progress=False)
    assert again.results == results
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == kept


def test_an_interrupted_run_resumes_without_retraining(tiny_export, tmp_path, cache, monkeypatch):
    out = tmp_path / "run"
    real_bench = run_module.bench

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "bench", interrupted)
    with pytest.raises(KeyboardInterrupt):
        onnxmtl.run(tiny_export("legacy17"), "scenes", out, config=TINY, progress=False)
    assert not (out / "results.json").exists()
    trained = {p: p.stat().st_mtime_ns for p in out.rglob("supermodel.pt")}
    assert len(trained) == 11  # search, all-shared, 6 last-k, 3 single-task
    (out / "models" / "all-shared.onnx").unlink()
    monkeypatch.setattr(run_module, "bench", real_bench)
    onnxmtl.run(
        tiny_export("legacy17"), "scenes", out, config=TINY, bench_repeats=3, progress=False
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("supermodel.pt")} == trained
    assert (out / "models" / "all-shared.onnx").exists() and (out / "report.md").exists()


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its API example"
    return match.group(1)


def test_readme_api_example_runs(tiny_export, tmp_path, cache, monkeypatch, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 12
    shutil.copy(tiny_export("legacy17"), tmp_path / "backbone.onnx")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    model = onnx.load(tmp_path / "runs" / "api" / "model.onnx")
    assert [o.name for o in model.graph.output] == ["seg", "depth"]
    assert "p50_ms" in capsys.readouterr().out


def test_run_and_demo_bad_input(tiny_export, tmp_path):
    assert_clean_error(
        run_cli("demo", "--model", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "d")),
        "none.onnx",
        "make demo",
    )
    assert_clean_error(
        run_cli("run", str(tmp_path / "none.onnx"), "--data", "scenes", "--out", str(tmp_path)),
        "none.onnx",
    )
    assert_clean_error(
        run_cli(
            "run",
            str(tiny_export("legacy17")),
            "--data",
            "scenes",
            "--out",
            str(tmp_path / "o"),
            "--baselines",
            "all-shared,last-k,median",
        ),
        "baselines must be among",
        "got median",
    )


def test_run_trains_a_size_matched_random_policy_and_an_uncertainty_weighted_all_shared(
    tiny_export, tmp_path, cache
):
    out = tmp_path / "run"
    baselines = ("random-matched", "all-shared-uncertainty")
    result = onnxmtl.run(
        tiny_export("legacy17"),
        "scenes",
        out,
        config=TINY,
        baselines=baselines,
        bench_repeats=2,
        progress=False,
    )
    searched = json.loads((out / "search" / "policy.json").read_text())
    matched = json.loads((out / "baselines" / "random-matched" / "policy.json").read_text())
    unshared = [sum(c != 0 for row in p["choices"] for c in row) for p in (searched, matched)]
    assert unshared[0] == unshared[1]
    assert matched["method"] == "random-matched" and matched["seed"] == 0
    uw = out / "baselines" / "all-shared-uncertainty"
    assert json.loads((uw / "config.json").read_text())["weighting"] == "uncertainty"
    assert json.loads((uw / "policy.json").read_text())["method"] == "shared"
    methods = result.results["methods"]
    assert set(methods) == {"searched", *baselines}
    assert result.results["deploy"]["reference"] == "searched"  # no single-task, no all-shared


def test_run_force_redoes_a_finished_pipeline_folder(tiny_export, tmp_path, cache):
    out = tmp_path / "run"
    model = tiny_export("legacy17")
    onnxmtl.run(model, "scenes", out, config=TINY, baselines=("all-shared",), progress=False)
    before = (out / "results.json").stat().st_mtime_ns
    (out / "search" / ".onnxmtl.lock").touch()  # a stage's lock left from the first run
    onnxmtl.run(
        model, "scenes", out, config=TINY, baselines=("all-shared",), force=True, progress=False
    )
    assert (out / "results.json").stat().st_mtime_ns > before
    times = json.loads((out / "run_times.json").read_text())
    assert len(times) == 1  # started over: the first run's calls are gone


def test_a_run_started_before_an_option_existed_resumes_at_its_default(tmp_path):
    from onnxmtl.errors import RunFolderError
    from onnxmtl.pipeline.run_folders import check_resume
    from onnxmtl.training import SearchConfig

    config = SearchConfig().to_dict()
    older = {k: v for k, v in config.items() if k != "quantize"}  # written before it existed
    (tmp_path / "run.json").write_text(json.dumps({"kind": "search", "config": older}))
    check_resume(tmp_path, {"kind": "search", "config": config})
    changed = SearchConfig().with_options(quantize=True).to_dict()
    with pytest.raises(RunFolderError, match=r"quantize None -> True"):
        check_resume(tmp_path, {"kind": "search", "config": changed})
