"""Delta-m of the searched model against the length of the search, beside all-shared.

    .venv/bin/python benchmarks/search_length.py --config configs/demo_cpu.yaml [--head conv]
        [--datasets fashion-locate] [--lengths 100 300 600] [--seeds 0]
        [--out .cache/search-length] [--plot docs/search_length.png]

The models are trained as benchmarks/evidence.py's (same backbone, data drawn with the seed,
post-training budget), each by its stage (`onnxmtl search`, `onnxmtl train --baseline`) in
its own folder under --out, where a finished one is reused; only `search_steps` changes, and
the temperature and learning-rate schedules stretch with it. Per (length, seed): test delta-m of
the searched model and of all-shared (against the same seed's single-task models), how many
(task, unit) pairs are not shared, the mean share of the policy gradient that came from the
task losses, and the mean final probability of the task-specific branch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.evidence import backbone, headed_tasks, seed_config  # noqa: E402
from onnxmtl.benchmark.plots import figure, save_figure  # noqa: E402
from onnxmtl.compiler import SHARED, Policy  # noqa: E402
from onnxmtl.pipeline.stages import search, train_baseline  # noqa: E402
from onnxmtl.run_folder import RunFolder  # noqa: E402
from onnxmtl.tasks import delta_m  # noqa: E402
from onnxmtl.training import SearchConfig  # noqa: E402

Metrics = dict[str, dict[str, float]]  # task -> metric -> value


def test_metrics(
    name: str, model: Path, data: str, tasks, config: SearchConfig, out: Path
) -> Metrics:
    """Test metrics of every task under `name` ('searched', or a baseline `onnxmtl train
    --baseline` takes; 'single-task' gives each task its own model's), trained in `out` or
    read from it when it finished there."""
    resume = RunFolder(out).has_checkpoint()
    if name == "searched":
        return search(model, data, out, tasks, config, resume=resume, progress=False).metrics[
            "test"
        ]
    results = train_baseline(model, data, out, name, tasks, config, resume=resume, progress=False)
    return {task: m for r in results.values() for task, m in r.metrics["test"].items()}


def search_record(folder: Path) -> dict:
    """Non-shared pairs, mean task share of the policy gradient and final p(specific)."""
    policy = Policy.from_json(folder / "policy.json")
    steps = [
        json.loads(line)
        for line in (folder / "metrics.jsonl").read_text().splitlines()
        if '"phase": "search"' in line
    ]
    return {
        "non_shared": sum(c != SHARED for row in policy.choices for c in row),
        "pairs": sum(len(row) for row in policy.choices),
        "grad_task_share": float(np.mean([s["grad_task_share"] for s in steps])),
        "p_specific": steps[-1]["p_specific"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["fashion-locate"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[100, 300, 600])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--config", help="SearchConfig YAML (seed, device, length set here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64, help="backbone input size")
    parser.add_argument("--head", help="give every task this head, as evidence.py's --head")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "search-length")
    parser.add_argument("--plot", type=Path, help="write delta-m against length as a PNG")
    args = parser.parse_args()
    base = SearchConfig.load(args.config)
    model = backbone(args.size)
    rows = []
    for data in args.datasets:
        tasks, data_name = headed_tasks(data, args.head, base)
        for seed in args.seeds:
            config = seed_config(base, seed, args.device, 0)
            folder = args.out / data_name / f"seed{seed}"
            single = test_metrics("single-task", model, data, tasks, config, folder / "single-task")
            shared = test_metrics("all-shared", model, data, tasks, config, folder / "all-shared")
            for length in args.lengths:
                name = "searched" if length == base.search.steps else f"searched-{length}"
                run = config.with_options(search_steps=length)
                searched = test_metrics("searched", model, data, tasks, run, folder / name)
                row = {
                    "data": data_name,
                    "seed": seed,
                    "length": length,
                    "searched": delta_m(searched, single),
                    "all_shared": delta_m(shared, single),
                    **search_record(folder / name),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| data | search steps | seed | searched delta-m % | all-shared delta-m % | gap |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['data']} | {r['length']} | {r['seed']} | {r['searched']:+.2f} | "
            f"{r['all_shared']:+.2f} | {r['searched'] - r['all_shared']:+.2f} |"
        )
    print("\n| data | search steps | seed | non-shared pairs | grad_task_share | p specific |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['data']} | {r['length']} | {r['seed']} | {r['non_shared']} of {r['pairs']} | "
            f"{r['grad_task_share']:.2f} | {r['p_specific']:.3f} |"
        )
    if args.plot:
        plot(rows, args.plot)


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = figure(figsize=(6.0, 3.6))
    for (data, seed), group in _groups(rows).items():
        lengths = [r["length"] for r in group]
        line = ax.plot(lengths, [r["searched"] for r in group], "o-", label=f"{data} seed {seed}")
        ax.axhline(group[0]["all_shared"], color=line[0].get_color(), ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("search steps")
    ax.set_ylabel("test delta-m % vs single-task")
    ax.set_title("searched (solid) and all-shared (dashed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _groups(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["seed"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["length"]) for k, v in groups.items()}


if __name__ == "__main__":
    main()
