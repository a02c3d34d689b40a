"""Evidence: searched policy vs conflict heuristic, all-shared, single-task and random policy,
over seeds.

    .venv/bin/python benchmarks/evidence.py [--datasets multi-fashion scenes] [--seeds 0 1 2]
        [--config CFG.yaml] [--device cpu|cuda] [--methods ...] [--out .cache/evidence]

The backbone is EfficientNet-Lite0 with its real ImageNet weights (exported by converters/ at
--size). For each dataset and seed, the same trainer runs: the search (warm-up, search,
derive, post-train), the conflict heuristic (the same warm-up, then RECON's most conflicting
units task-specific: `derive: conflict`, no search), all-shared (hard parameter sharing), one
single-task model per task, and a seeded random policy; the baselines get as many weight
updates as the search run (SearchConfig.baseline_steps). The table gives test metrics (mean ±
std over seeds), delta-m against the single-task models of the same seed, and parameters (the
model the policy implies, heads included) as a share of the single-task models together.
Every finished run is kept under --out, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import export_backbones  # noqa: E402
from onnxmtl.compiler import Policy, load_supermodel, policy_params  # noqa: E402
from onnxmtl.data import load_dataset  # noqa: E402
from onnxmtl.pipeline.runs import finished, search, train_baseline  # noqa: E402
from onnxmtl.training import SearchConfig, delta_m  # noqa: E402

METHODS = ("searched", "conflict", "all-shared", "random", "single-task")
HEADLINE = {
    "left": "accuracy",
    "right": "accuracy",
    "groups": "subset_accuracy",
    "item": "accuracy",
    "where": "mae",
    "seg": "miou",
    "depth": "abs_err",
    "normal": "mean_angle",
}


def backbone(size: int) -> Path:
    return export_backbones.export_backbone(
        "efficientnet_lite0",
        "legacy17",
        ROOT / ".cache" / "bench",
        file_name=f"efficientnet_lite0.{size}.onnx",
        size=size,
    )


def run_method(
    method: str, model: Path, data: str, tasks: list | None, config: SearchConfig, out: Path
) -> dict:
    """Test metrics and implied parameters of one method, recorded in `out`/result.json so that
    a finished method is reused (also where its run folders came from another machine without
    their weights)."""
    record = out / "result.json"
    if record.exists():
        return json.loads(record.read_text())
    if method == "single-task":
        folders = sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
        done = (
            (out / "run.json").exists()
            and folders
            and all(finished(f) is not None for f in folders)
        )
    else:
        folders, done = [out], finished(out) is not None
    if not done:
        if method == "searched":
            search(model, data, out, tasks, config=config, force=True, progress=False)
        elif method == "conflict":
            heuristic = config.with_options(derive="conflict", search_steps=0)
            search(model, data, out, tasks, config=heuristic, force=True, progress=False)
        else:
            train_baseline(
                model, data, out, method, tasks, config=config, force=True, progress=False
            )
        if method == "single-task":
            folders = sorted(p for p in out.iterdir() if p.is_dir())
    metrics, params = {}, 0
    for folder in folders:
        metrics.update(json.loads((folder / "metrics.json").read_text())["test"])
        supermodel = load_supermodel(folder / "supermodel.pt")
        params += policy_params(supermodel, Policy.from_json(folder / "policy.json").choices)
    result = {"metrics": metrics, "params": params}
    record.write_text(json.dumps(result, indent=1))
    return result


def headed_tasks(data: str, head: str | None, config: SearchConfig) -> tuple[list | None, str]:
    """The tasks of dataset `data` with every head set to `head` (None: the dataset's own
    tasks), and the name of their folder under --out."""
    if not head:
        return None, data
    dataset = load_dataset(data, "train", **config.dataset.options)
    return [replace(t, head=head) for t in dataset.tasks()], f"{data}-{head}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["multi-fashion", "scenes"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--config", help="SearchConfig YAML (seed and device are set here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="run only these; the table needs all five and reuses the finished ones",
    )
    parser.add_argument("--size", type=int, default=64, help="backbone input size")
    parser.add_argument(
        "--head",
        help="give every task this head (aspp, conv, conv1x1, linear); default: the "
        "dataset's own heads",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "evidence")
    args = parser.parse_args()
    base = SearchConfig.load(args.config)
    model = backbone(args.size)
    summary = {}
    for data in args.datasets:
        tasks, name = headed_tasks(data, args.head, base)
        rows: dict[str, list[dict]] = {m: [] for m in METHODS}
        for seed in args.seeds:
            config = base.with_options(seed=seed, device=args.device)
            results = {
                m: run_method(m, model, data, tasks, config, args.out / name / f"seed{seed}" / m)
                for m in args.methods
            }
            if set(results) != set(METHODS):
                continue
            single = results["single-task"]
            for m, r in results.items():
                r["delta_m"] = delta_m(r["metrics"], single["metrics"])
                r["param_share"] = r["params"] / single["params"]
                rows[m].append(r)
            print(
                f"{name} seed {seed}: "
                + ", ".join(
                    f"{m} delta-m {r['delta_m']:+.2f}% params {r['param_share']:.2f}"
                    for m, r in results.items()
                ),
                flush=True,
            )
        if rows["single-task"]:
            summary[name] = rows
            print_table(name, rows, args.seeds)
    if not summary:
        return
    record = args.out / "evidence.json"
    previous = json.loads(record.read_text()) if record.exists() else {}
    record.write_text(json.dumps({**previous, **summary}, indent=1))


def _ms(values: list[float], fmt: str = ".3f") -> str:
    return f"{np.mean(values):{fmt}} ± {np.std(values):{fmt}}"


def print_table(data: str, rows: dict[str, list[dict]], seeds: list[int]) -> None:
    tasks = list(rows["single-task"][0]["metrics"])
    cols = [
        f"{t} {HEADLINE.get(t, next(iter(rows['single-task'][0]['metrics'][t])))}" for t in tasks
    ]
    print(f"\n## {data}, test split, {len(seeds)} seeds ({', '.join(map(str, seeds))})\n")
    print("| method | " + " | ".join(cols) + " | delta-m % | params | params / single-task |")
    print("|---|" + "---|" * (len(cols) + 3))
    for method, runs in rows.items():
        cells = []
        for task, col in zip(tasks, cols):
            metric = col.split(" ", 1)[1]
            cells.append(_ms([r["metrics"][task][metric] for r in runs]))
        print(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {_ms([r['delta_m'] for r in runs], '+.2f')} | "
            f"{np.mean([r['params'] for r in runs]) / 1e6:.2f} M | "
            f"{_ms([r['param_share'] for r in runs], '.2f')} |"
        )
    print()


if __name__ == "__main__":
    main()
