"""The run report: `report.md` with its plots, from the figures `run` gathered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from onnxmtl.benchmark import BenchResult, latency_bars, policy_heatmap, to_markdown
from onnxmtl.benchmark.plots import figure, save_figure
from onnxmtl.compiler import BRANCHES, Policy
from onnxmtl.io_utils import atomic_write_text
from onnxmtl.pipeline.quantize_run import quantize_table
from onnxmtl.run_folder import PipelineFolder
from onnxmtl.tasks.delta_m import DEFINITION
from onnxmtl.tasks.metrics import HIGHER_IS_BETTER
from onnxmtl.training.phases import PostTrain, Search, Warmup

PHASE_COLOURS = {Warmup.name: "#8172b3", Search.name: "#4c72b0", PostTrain.name: "#55a868"}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def search_curves(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Training loss per phase, the Gumbel temperature, the mean branch probabilities over
    the search, and what moves the policy logits: the norm of each part of their gradient
    (task losses, sharing and cost regularisers) and the tasks' share of the sum."""
    fig, axes = figure(1, 4, figsize=(17, 3.4))
    offset = 0
    for phase, colour in PHASE_COLOURS.items():
        part = [r for r in rows if r["phase"] == phase and "loss" in r]
        if part:
            x = offset + np.arange(1, len(part) + 1)
            axes[0].plot(x, [r["loss"] for r in part], color=colour, lw=0.8, label=phase)
            offset += len(part)
    axes[0].set(title="training loss (sum over tasks)", xlabel="step", yscale="log")
    axes[0].legend()
    search = [r for r in rows if r["phase"] == Search.name]
    steps = np.arange(1, len(search) + 1)
    axes[1].plot(steps, [r.get("tau", np.nan) for r in search], color="#c44e52")
    axes[1].set(title="Gumbel temperature", xlabel="search step")
    for branch in BRANCHES:
        values = [r.get(f"p_{branch}", np.nan) for r in search]
        axes[2].plot(steps, values, label=branch)
    axes[2].set(title="mean branch probability", xlabel="search step", ylim=(0, 1))
    axes[2].legend()
    gradient_attribution(axes[3], search, steps)
    fig.tight_layout()
    save_figure(fig, path)


def gradient_attribution(ax, search: list[dict[str, Any]], steps: np.ndarray) -> None:
    """The L2 norm of each part of the policy logits' gradient per search step (log scale),
    and the task losses' share of their sum on a second axis."""
    logged = [p for p in ("task", "sharing", "cost") if any(f"grad_{p}" in r for r in search)]
    for part in logged:
        values = [r.get(f"grad_{part}", np.nan) for r in search]
        ax.plot(steps, values, lw=0.8, label=f"|grad| {part}")
    ax.set(title="policy-logit gradient by source", xlabel="search step")
    if logged:
        ax.set_yscale("log")
        ax.legend(loc="lower left", fontsize="small")
    share = ax.twinx()
    share.plot(
        steps, [r.get("grad_task_share", np.nan) for r in search], color="k", ls="--", lw=0.8
    )
    share.set(ylim=(0, 1), ylabel="task share (dashed)")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def metrics_table(methods: dict[str, dict[str, Any]]) -> str:
    """Test metrics per method, with delta-m, parameters and MACs."""
    first = next(iter(methods.values()))["metrics"]
    columns = [(task, name) for task, values in first.items() for name in values]
    head = [f"{t} {n} {'↑' if HIGHER_IS_BETTER.get(n, True) else '↓'}" for t, n in columns]
    lines = [
        "| method | " + " | ".join(head) + " | delta-m % | params | params / single-task | "
        "MMACs/image |",
        "|---|" + "---|" * (len(columns) + 4),
    ]
    for method, entry in methods.items():
        cells = [_fmt(entry["metrics"][t][n]) for t, n in columns]
        delta = f"{entry['delta_m']:+.2f}" if "delta_m" in entry else "-"
        share = f"{entry['param_share']:.2f}" if "param_share" in entry else "-"
        macs = f"{entry['macs'] / 1e6:,.1f}" if "macs" in entry else "-"
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {delta} | {entry['params']:,} | "
            f"{share} | {macs} |"
        )
    return "\n".join(lines)


def latency_ratios(timing: BenchResult) -> str:
    """p50 latency of the searched model against all-shared and the single-task models'
    sum, per batch size."""
    lines = [
        "| batch | searched ms | searched / all-shared | searched / sum of single-task |",
        "|---|---|---|---|",
    ]
    for batch in timing.settings.batch_sizes:
        p50 = timing.p50_ms(batch)
        single = sum(v for k, v in p50.items() if k.startswith("single-"))
        shared = f"{p50['searched'] / p50['all-shared']:.2f}" if "all-shared" in p50 else "-"
        summed = f"{p50['searched'] / single:.2f}" if single else "-"
        lines.append(f"| {batch} | {p50['searched']:.2f} | {shared} | {summed} |")
    return "\n".join(lines)


def budget_line(results: dict[str, Any], timing: BenchResult) -> str:
    """The latency budget the search had, its prediction for the searched model, and what
    bench measured (`timing`) at that batch size ('' without a budget)."""
    info = results.get("latency_budget")
    if not info or info.get("budget_ms") is None:
        return ""
    measured = timing.p50_ms(info["batch"]).get("searched")
    seen = (
        ""
        if measured is None
        else f"; bench measured {measured:.3f} ms (p50, models timed in turn)"
    )
    return (
        f"Latency budget {info['budget_ms']:g} ms at batch {info['batch']} on {info['device']} "
        f"({info['providers'][0]}): the search's table predicted {info['predicted_ms']:.3f} ms "
        f"for the searched model (all-shared {info['all_shared_ms']:.3f} ms){seen}.\n"
    )


def deploy_section(results: dict[str, Any]) -> str:
    """Which model to deploy and why, with every candidate's validation and test figures."""
    choice = results["deploy"]
    names = [t["name"] for t in results["tasks"]]
    files = {name: f"`models/{name}.onnx`" for name in results["methods"]}
    files["single-task"] = ", ".join(f"`models/single-{t}.onnx`" for t in names)
    lines = [
        f"Deploy **{choice['model']}** ({files[choice['model']]}): {choice['reason']}. "
        f"Budget: {choice['budget']}. Validation delta-m is against the {choice['reference']} "
        "model(s) on the validation split, which no model trained on; test figures are "
        "below and were not used to choose.",
        "",
        "| model | policy | val delta-m % | test delta-m % | params / single-task | latency ms | "
        "within budget |",
        "|---|---|---|---|---|---|---|",
    ]
    methods = results["methods"]
    for c in choice["candidates"]:
        test = methods[c["name"]].get("delta_m")
        cells = [
            f"{c['val_delta_m']:+.2f}",
            "-" if test is None else f"{test:+.2f}",
            "-" if c["param_share"] is None else f"{c['param_share']:.2f}",
            "-" if c["latency_ms"] is None else f"{c['latency_ms']:.3f}",
            "yes" if c["within_budget"] else "no",
        ]
        policy = methods[c["name"]].get("policy", "-")
        lines.append(f"| {c['name']} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def input_lines(results: dict[str, Any]) -> str:
    """What every exported model takes, and how closely each reproduced its trained model on
    a test image in onnxruntime ('' for results from before the input contract)."""
    spec, checked = results.get("input"), results.get("self_check")
    if not spec or not checked:
        return ""
    shape = ", ".join(map(str, spec["shape"]))
    worst = max(checked, key=checked.get)
    return (
        f"- input of every exported model: `{spec['name']}`, {spec['dtype']} {spec['layout']} "
        f"[{shape}]; {spec['preprocessing']['description']}\n"
        f"- self-check: on a test image, onnxruntime matched each trained model to at most "
        f"{checked[worst]:.2g} of the output scale ({worst})"
    )


def int8_section(results: dict[str, Any]) -> str:
    """The deployed model in INT8 against fp32, per task and in latency ('' unless the run
    quantised it)."""
    summary = results.get("quantize")
    if not summary:
        return ""
    name = Path(summary["model"]).stem
    return f"""
## INT8 ({name})

Static INT8 with every task's test metrics measured by onnxruntime (`onnxmtl quantize`);
task change is the mean relative change of the task's metrics, in %.

{quantize_table(summary)}
"""


def selection_section(results: dict[str, Any]) -> str:
    """What derive 'halving' measured: each task's pick and the second rung's candidates,
    scored on the training split's held-out half (empty for other derive methods)."""
    selection = results["policy"].get("selection")
    if not selection:
        return ""
    tasks = [t["name"] for t in results["tasks"]]
    chosen = ", ".join(f"{t} takes {p}" for t, p in zip(tasks, selection["chosen"]))
    combos = len(selection["second"])
    lines = [
        f"The search measured {len(selection['options'])} options for every task, then "
        f"{combos} combination{'s' if combos != 1 else ''} of the best (delta-m % against "
        f"all-shared after the same fine-tuning, on held-out training data). Chosen: {chosen}.",
        "",
        "| " + " | ".join(tasks) + " | steps | delta-m % |",
        "|" + "---|" * (len(tasks) + 2),
    ]
    for trial in selection["second"]:
        lines.append(
            "| " + " | ".join(trial["picks"]) + f" | {trial['steps']} | {_fmt(trial['delta_m'])} |"
        )
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Write the plots and `report.md` into `out`; return the report's path."""
    files = PipelineFolder(out)
    policy = Policy.from_json(files.search.policy)
    policy_heatmap(
        {"tasks": policy.tasks, "choices": policy.choices},
        files.plot("policy"),
        "searched policy",
    )
    timing = BenchResult.from_dict(results["bench"])
    latency_bars(timing, files.plot("latency"))
    search_curves(read_log(files.search.log("jsonl")), files.plot("search_curves"))
    counts = results["policy"]["counts"]
    tasks = ", ".join(f"{t['name']} ({t['kind']})" for t in results["tasks"])
    minutes = results["wall_seconds"] / 60
    text = f"""# onnxmtl run report

- backbone: `{results["model"]}` ({results["units"]} units)
- data: `{results["data"]}`; tasks: {tasks}
- policy: {counts["shared"]} shared, {counts["specific"]} task-specific, {counts["skip"]} \
skipped (task, unit) pairs ({results["policy"]["method"]})
- wall time: {minutes:.1f} min (search, baselines, export, bench; resumed calls added up)
{input_lines(results)}

## Which model to deploy

{deploy_section(results)}

## Task metrics (test split)

↑ higher is better, ↓ lower is better. {results.get("delta_m", DEFINITION)}, against the
single-task models. Parameters are those of the model the policy implies, heads included;
MACs are counted on the exported ONNX graph.

{metrics_table(results["methods"])}

## Policy

![policy](policy.png)

## Inference (onnxruntime)

{latency_ratios(timing)}
{budget_line(results, timing)}

{to_markdown(timing)}

![latency](latency.png)
{int8_section(results)}
## Search

{selection_section(results)}
![search curves](search_curves.png)

Files: `models/` (ONNX exports; `searched.pt` is the derived PyTorch model), `search/`
(policy.json, metrics.jsonl, checkpoints), `baselines/`, `results.json` (every figure above).
"""
    atomic_write_text(files.report, text)
    return files.report
