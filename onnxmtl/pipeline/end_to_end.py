"""`run`: from an ONNX backbone to an exported multi-task model, its baselines and a report.

Every stage writes into its own part of the run folder and is skipped when its output is
there, so a run that was interrupted continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from onnxmtl.benchmark import BenchResult, bench
from onnxmtl.compiler import (
    LAST_K_POLICIES,
    Policy,
    load_supermodel,
    matched_random_policy,
    policy_params,
    unshared_pairs,
)
from onnxmtl.compiler.supermodel import SuperModel
from onnxmtl.data.torch_dataset import DataSource, data_label
from onnxmtl.errors import ConfigError, ModelFileError, RunFolderError
from onnxmtl.io_utils import atomic_write_text, read_json
from onnxmtl.pipeline.choose import choose_model
from onnxmtl.pipeline.exports import (
    Jobs,
    export_models,
    input_contract,
    one_model_baselines,
    run_models,
    self_check,
)
from onnxmtl.pipeline.quantize_run import quantize_file
from onnxmtl.pipeline.report import write_report
from onnxmtl.pipeline.run_folders import (
    check_resume,
    finished,
    has_checkpoint,
    run_info,
    writing,
)
from onnxmtl.pipeline.stages import (
    Backbone,
    backbone_file,
    load_splits,
    search,
    start,
    test_image,
    train_baseline,
)
from onnxmtl.run_folder import (
    PipelineFolder,
    RunFolder,
    check_fresh,
    clear_run,
    is_run,
)
from onnxmtl.runtime import cpu_threads
from onnxmtl.tasks import DELTA_M_DEFINITION, Task, delta_m
from onnxmtl.training import SearchConfig, distributed

# The models `run` trains beside the search, by default: the ones a person would try without
# a search. All of them compete with the searched model on the validation split.
DEFAULT_BASELINES = ("all-shared", "single-task", *LAST_K_POLICIES)
# Besides the fixed-policy baselines (`compiler.is_policy_baseline`) and single-task: all-shared
# trained with uncertainty weighting (a tuned scalarisation), and a random policy that leaves
# the shared branch at as many (task, unit) pairs as the searched policy does.
EXTRA_BASELINES = {"all-shared-uncertainty": {"weighting": "uncertainty"}, "random-matched": {}}
RUN_BASELINES = (*DEFAULT_BASELINES, "random", *EXTRA_BASELINES)
GROUPS = {"last-k": LAST_K_POLICIES}  # a name that stands for several baselines


def expand_baselines(names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` with each group name (`GROUPS`) replaced by its baselines, duplicates dropped,
    checked against `RUN_BASELINES`."""
    expanded = [b for name in names for b in GROUPS.get(name, (name,))]
    unknown = sorted(set(expanded) - set(RUN_BASELINES))
    if unknown:
        raise ConfigError(
            f"baselines must be among {', '.join(RUN_BASELINES)} (or {', '.join(GROUPS)}); "
            f"got {', '.join(unknown)}."
        )
    return tuple(dict.fromkeys(expanded))


@dataclass
class RunResult:
    """Where everything is, and the figures the report shows."""

    out: Path
    report: Path
    results: dict[str, Any]


def _train_stage(folder: Path, subfolders: list[str], start) -> None:
    """Run a training stage unless every folder it writes holds a finished run; resume it
    from its checkpoints where it has some."""
    targets = [folder / name for name in subfolders] or [folder]
    if all(finished(t) is not None for t in targets):
        return
    resume = has_checkpoint(folder)
    start(resume=resume, force=not resume)


def run(
    model: Backbone,
    data: DataSource,
    out: str | Path,
    tasks: str | Path | list[Task] | None = None,
    config: SearchConfig | dict | str | Path | None = None,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    batch_sizes: tuple[int, ...] = (1, 8),
    bench_repeats: int = 50,
    force: bool = False,
    progress: bool = True,
    example_input: torch.Tensor | None = None,
) -> RunResult:
    """Compile, warm up, search, derive and post-train on `data`; train the baselines with
    the same trainer and budget; export every model to ONNX; time them with onnxruntime; write
    `report.md`, `results.json` and the plots into `out`. An unfinished `out` is resumed; a
    finished one is returned as it is unless `force` (which starts over). The backbone is an
    ONNX file or a PyTorch module, exported (traced on `example_input`) into `out`.
    `baselines` are among `RUN_BASELINES` or `GROUPS`; the model to deploy is the best of them
    and the searched model on the validation split (`choose_model`)."""
    out = Path(out)
    files = PipelineFolder(out)
    if not isinstance(model, torch.nn.Module) and not Path(model).is_file():
        raise ModelFileError(f"{model}: ONNX model not found.")
    baselines = expand_baselines(baselines)
    if files.results.exists() and not force:
        if progress:
            print(f"{out} holds a finished run; --force runs it again", flush=True)
        fix = "run again with --force to redo the run."
        results = read_json(files.results, fix, RunFolderError)
        return RunResult(out, files.report, results)
    config = start(config)
    with writing(out), cpu_threads(config.runtime.threads):
        if force:
            distributed.barrier()
            if distributed.is_main():
                clear_run(out)
            distributed.barrier()
        elif not is_run(out):
            check_fresh(out)  # before the backbone is exported into it
        model = backbone_file(model, out, example_input)
        info = {**run_info("pipeline", model, data, None, config), "baselines": list(baselines)}
        if not force and is_run(out):
            check_resume(out, info)
        if not distributed.is_main():
            return _run(
                out, model, data, tasks, config, baselines, batch_sizes, bench_repeats, progress
            )
        atomic_write_text(files.run_file, json.dumps(info, indent=1))
        started = time.time()
        try:
            return _run(
                out, model, data, tasks, config, baselines, batch_sizes, bench_repeats, progress
            )
        finally:
            _active_seconds(out, time.time() - started)


def _run(
    out: Path,
    model: str | Path,
    data: DataSource,
    tasks: str | Path | list[Task] | None,
    config: SearchConfig,
    baselines: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    bench_repeats: int,
    progress: bool,
) -> RunResult:
    started = time.time()
    files = PipelineFolder(out)

    search_dir = files.search.path
    _train_stage(
        search_dir,
        [],
        lambda **kw: search(
            model, data, search_dir, tasks=tasks, config=config, progress=progress, **kw
        ),
    )
    supermodel = load_supermodel(files.search.supermodel)
    policy = supermodel.policy or Policy.from_json(files.search.policy)  # saved without: older
    for name in baselines:
        folder = files.baseline(name).path
        kind, fixed, options = name, None, EXTRA_BASELINES.get(name, {})
        if name == "random-matched":
            seed = config.runtime.seed
            kind, fixed = name, matched_random_policy(supermodel, unshared_pairs(policy), seed)
        elif name in EXTRA_BASELINES:
            kind = "all-shared"
        _train_stage(
            folder,
            supermodel.task_names if name == "single-task" else [],
            lambda folder=folder, kind=kind, fixed=fixed, options=options, **kw: train_baseline(
                model,
                data,
                folder,
                kind,
                tasks=tasks,
                config=config.with_options(**options) if options else config,
                policy=fixed,
                progress=progress,
                **kw,
            ),
        )
    if not distributed.is_main():  # under torchrun, rank 0 exports, benches and reports
        return RunResult(out, files.report, {})
    image, preprocessing = test_image(data, config, tasks)
    models = run_models(supermodel, policy, files, baselines)
    exported = export_models(models, files, image, preprocessing, progress)
    checked = self_check(models, exported, image)
    if config.cost.latency_budget_ms is not None:  # the budget's batch is timed too
        batch_sizes = tuple(sorted({*batch_sizes, config.cost.latency_batch}))
    timing = bench(
        exported,
        batch_sizes=batch_sizes,
        repeats=bench_repeats,
        warmup=5,
        memory=True,
        threads=config.runtime.threads,
    )
    results = _results(files, models, supermodel, policy, baselines, timing, model, data, config)
    results["input"] = input_contract(exported[files.SEARCHED])
    results["self_check"] = checked
    previous = json.loads(files.times.read_text()) if files.times.exists() else []
    results["wall_seconds"] = sum(previous) + time.time() - started
    if config.deploy.quantize:
        results["quantize"] = _quantize(files, results["deploy"]["model"], data, tasks, config)
    report = write_report(results, out)
    atomic_write_text(files.results, json.dumps(results, indent=1))
    return RunResult(out, report, results)


def _quantize(
    files: PipelineFolder,
    deployed: str,
    data: DataSource,
    tasks: str | Path | list[Task] | None,
    config: SearchConfig,
) -> dict[str, Any]:
    """The deployed model (the searched one where that is several files) as INT8, with each
    task's test metrics before and after (`quantize_file`), recorded in quantize.json."""
    name = files.SEARCHED if deployed == "single-task" else deployed
    train, test = load_splits(data, config, tasks)
    d = config.deploy
    summary = quantize_file(
        files.onnx(name), train, test, config.runtime.seed, d.quantize_tolerance,
        d.quantize_count, threads=config.runtime.threads,
    )  # fmt: skip
    atomic_write_text(files.quantize, json.dumps(summary, indent=1))
    return summary


def _metrics(folder: RunFolder, split: str = "test") -> dict[str, dict[str, float]]:
    return json.loads(folder.metrics.read_text())[split]


def _entry(folder: RunFolder, job: tuple[SuperModel, Policy, list[str] | None]) -> dict[str, Any]:
    """Test and validation metrics and parameters of the model a run folder trained (`job`:
    its supermodel and policy, as `run_models` loaded them)."""
    model, policy, _ = job
    return {
        "metrics": _metrics(folder),
        "val_metrics": _metrics(folder, "val"),
        "params": policy_params(model, policy.choices),
        "policy": policy.method,
    }


def _results(
    out: PipelineFolder,
    jobs: Jobs,
    supermodel: SuperModel,
    policy: Policy,
    baselines: tuple[str, ...],
    timing: BenchResult,
    model: str | Path,
    data: DataSource,
    config: SearchConfig,
) -> dict[str, Any]:
    methods: dict[str, dict[str, Any]] = {"searched": _entry(out.search, jobs[out.SEARCHED])}
    for name in one_model_baselines(baselines):
        methods[name] = _entry(out.baseline(name), jobs[name])
    if "single-task" in baselines:
        folder = out.baseline("single-task")
        entries = [_entry(folder.task(t), jobs[f"single-{t}"]) for t in supermodel.task_names]
        methods["single-task"] = {
            "metrics": {k: v for e in entries for k, v in e["metrics"].items()},
            "val_metrics": {k: v for e in entries for k, v in e["val_metrics"].items()},
            "params": sum(e["params"] for e in entries),
            "policy": "single-task",
        }
        single = methods["single-task"]
        for entry in methods.values():
            entry["delta_m"] = delta_m(entry["metrics"], single["metrics"])
            entry["param_share"] = entry["params"] / single["params"]
    reference = "single-task" if "single-task" in methods else "all-shared"
    reference = reference if reference in methods else "searched"
    for entry in methods.values():
        entry["val_delta_m"] = delta_m(entry["val_metrics"], methods[reference]["val_metrics"])
    infos = timing.models
    batch = config.cost.latency_batch if config.cost.latency_budget_ms is not None else 1
    p50 = timing.p50_ms(batch)
    latency: dict[str, float] = {}
    for name, entry in methods.items():
        if name == "single-task":
            entry["macs"] = sum(v.macs for k, v in infos.items() if k.startswith("single-"))
            latency[name] = sum(v for k, v in p50.items() if k.startswith("single-"))
        else:
            entry["macs"] = infos[name].macs
            latency[name] = p50[name]
    choice = choose_model(methods, latency, config, reference)
    return {
        "model": str(model),
        "data": data_label(data),
        "tasks": [t.to_dict() for t in supermodel.tasks],
        "units": len(supermodel.units),
        "policy": {
            "counts": policy.counts(),
            "method": policy.method,
            "seed": policy.seed,
            "choices": policy.choices,
            "selection": _read_json(out.search.selection),
        },
        "delta_m": DELTA_M_DEFINITION,
        "methods": methods,
        "bench": timing.to_dict(),
        "config": config.to_dict(),
        "latency_budget": _read_json(out.search.cost_report),
        "deploy": choice.to_dict(),
    }


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _active_seconds(out: Path, seconds: float) -> float:
    """Add this call's seconds to the run's log of calls; the total over every call (a run
    that was interrupted and resumed counts only the time it was running)."""
    path = PipelineFolder(out).times
    times = json.loads(path.read_text()) if path.exists() else []
    times.append(round(seconds, 2))
    atomic_write_text(path, json.dumps(times))
    return sum(times)
