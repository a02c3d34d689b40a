"""How far the final models are from convergence, and whether the sharing policies part as
they train longer: validation metrics against the length of the final models' training.

    .venv/bin/python benchmarks/training_length.py [--datasets fashion-edges] [--seeds 0 1]
        [--lengths 150 300 600 1200 2400] [--models single-task all-shared skip-last-3]
        [--config configs/demo_cpu.yaml] [--threads 1] [--out .cache/training-length]
        [--json docs/benchmarks/training_length.json] [--summarize-only]

Every final model of the evidence (benchmarks/evidence.py) trains `post_train_steps` steps from
the backbone's weights: 150 steps of 32 images at the demo's config, under one epoch. Here
each model of --models (a baseline that `onnxmtl train --baseline` takes; 'single-task' is one
model per task) is trained with the evidence's trainer, data and seed to the longest --length.
At each shorter length its checkpoint is finished in a copy of its folder (precise BatchNorm
statistics, then the evaluation) just as a run of that length ends: the post-training rate
halves every `post_train_lr_step` steps whatever the length, so the first L steps of a longer
run are those of an L-step run. --models may be split over jobs that share --out (each model's
curve is kept there and reused while its config is this one); --summarize-only writes the
record from the curves finished.

The record (--json, with the command, commit and machine) gives per length the epochs of the
training split, every model's validation metrics and each multi-task model's task-balanced
delta-m against the single-task models trained as long, per seed. Validation only, on
development seeds (0 by default): the record informs a design choice, the final models'
training length, which the evidence's fresh seeds must not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.evidence import backbone, epochs, seed_config  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from onnxmtl.compiler import baseline_policy  # noqa: E402
from onnxmtl.data import load_dataset  # noqa: E402
from onnxmtl.errors import OnnxMtlError  # noqa: E402
from onnxmtl.pipeline.evidence import check_reusable  # noqa: E402
from onnxmtl.pipeline.stages import compile_for_run  # noqa: E402
from onnxmtl.runtime import cpu_threads  # noqa: E402
from onnxmtl.tasks import Task, delta_m  # noqa: E402
from onnxmtl.training import SearchConfig, Trainer  # noqa: E402

Metrics = dict[str, dict[str, float]]  # task -> metric -> value
RESULT = ROOT / "docs" / "benchmarks" / "training_length.json"


def curve(
    model_path: Path,
    train,
    tasks: list[Task],
    policy_name: str,
    config: SearchConfig,
    lengths: list[int],
    folder: Path,
) -> dict[int, Metrics]:
    """Validation metrics of one model (the tasks `tasks` under baseline `policy_name`) after
    each of `lengths` steps of post-training, from one run to the longest length."""
    longest = config.with_options(post_train_steps=max(lengths))

    def trainer(run_config: SearchConfig, run_dir: Path) -> Trainer:
        model = compile_for_run(model_path, tasks, config)
        fixed = baseline_policy(model, policy_name, config.runtime.seed)
        return Trainer(model, train, run_config, run_dir, fixed_policy=fixed, label=folder.name)

    if folder.exists():
        shutil.rmtree(folder)  # an unfinished curve: its checkpoint is at an unknown length
    main = trainer(longest, folder / "train")
    done, metrics = 0, {}
    for length in sorted(lengths):
        if length < max(lengths):
            main.run(resume=done > 0, stop_after=length - done)
            at = folder / f"at{length}"
            shutil.copytree(folder / "train", at)
            end = trainer(config.with_options(post_train_steps=length), at).run(resume=True)
            shutil.rmtree(at)
        else:
            end = main.run(resume=done > 0)
        metrics[length] = end.metrics["val"]
        done = length
    return metrics


def model_curves(
    name: str,
    model_path: Path,
    data: str,
    config: SearchConfig,
    lengths: list[int],
    out: Path,
) -> dict[int, Metrics]:
    """The curve of model `name` (all tasks' metrics per length), from out/NAME/curve.json
    when it was finished at this config and these lengths."""
    record = out / name / "curve.json"
    wanted = {**config.to_dict(), "lengths": sorted(lengths)}
    if record.exists():
        stored = json.loads(record.read_text())
        check_reusable(stored, wanted, str(record))
        return {int(k): v for k, v in stored["metrics"].items()}
    train = load_dataset(data, "train", **config.dataset.options)
    tasks = train.tasks()
    if name == "single-task":
        metrics: dict[int, Metrics] = {length: {} for length in lengths}
        for task in tasks:
            one = curve(
                model_path, train, [task], "all-shared", config, lengths, out / name / task.name
            )
            for length, values in one.items():
                metrics[length].update(values)
    else:
        metrics = curve(model_path, train, tasks, name, config, lengths, out / name / "run")
    record.write_text(json.dumps({"config": wanted, "metrics": metrics}, indent=1) + "\n")
    return metrics


def summarize(
    data: str,
    seed: int,
    curves: dict[str, dict[int, Metrics]],
    config: SearchConfig,
    data_size: int,
) -> list[dict]:
    """One row per length: the epochs, the single-task models' validation metrics and each
    multi-task model's delta-m (%) against the single-task models trained as long."""
    rows = []
    single = curves.get("single-task", {})
    for length in sorted(next(iter(curves.values()))):
        row: dict = {
            "data": data,
            "seed": seed,
            "steps": length,
            "epochs": round(epochs(length, config, data_size), 2),
        }
        for task, values in single.get(length, {}).items():
            row.update({f"single-task {task} {m}": round(v, 4) for m, v in values.items()})
        for name, c in curves.items():
            if name != "single-task" and length in single:
                row[f"{name} delta-m %"] = round(delta_m(c[length], single[length]), 2)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["fashion-edges"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="development seeds")
    parser.add_argument("--lengths", nargs="+", type=int, default=[150, 300, 600, 1200, 2400])
    parser.add_argument("--models", nargs="+", default=["single-task", "all-shared", "skip-last-3"])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo_cpu.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all)")
    parser.add_argument("--size", type=int, default=64, help="backbone input size")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "training-length")
    parser.add_argument("--json", type=Path, default=RESULT)
    parser.add_argument(
        "--summarize-only", action="store_true", help="write the record from finished curves only"
    )
    args = parser.parse_args()
    if min(args.lengths) < 1:
        print("error: --lengths must be positive step counts", file=sys.stderr)
        return 2
    base = SearchConfig.load(args.config).with_options(device=args.device, threads=args.threads)
    record = provenance(
        "training_length.py", f"{args.threads} thread(s) a job" if args.threads else "every core"
    )
    rows: list[dict] = []
    curves: dict[str, dict] = {}
    try:
        model = backbone(args.size)
        with cpu_threads(args.threads):
            for data, seed in itertools.product(args.datasets, args.seeds):
                config = seed_config(base, seed, args.device, args.threads)
                out = args.out / data / f"seed{seed}"
                done = {}
                for name in args.models:
                    if args.summarize_only and not (out / name / "curve.json").exists():
                        continue
                    done[name] = model_curves(name, model, data, config, args.lengths, out)
                    print(f"{data} seed {seed} {name}: done", flush=True)
                if done:
                    size = len(load_dataset(data, "train", **config.dataset.options))
                    rows += summarize(data, seed, done, config, size)
                    curves.setdefault(data, {})[seed] = done
    except OnnxMtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {args.out}: no finished curve of --models to summarise", file=sys.stderr)
        return 2
    results = {"split": "val", "rows": rows, "curves": curves}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({**record, "config": base.to_dict(), "results": results}, indent=1) + "\n"
    )
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
