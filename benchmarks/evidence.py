"""Evidence: the searched model against the models a person would try, over fresh seeds,
chosen on validation and reported on validation and test.

    .venv/bin/python benchmarks/evidence.py --datasets fashion-locate [--seeds 120 121 ...]
        [--config configs/demo_cpu.yaml] [--threads 1] [--out .cache/evidence]
        [--docs docs/evidence]

For each task set and seed, one `onnxmtl run` of EfficientNet-Lite0 (its real ImageNet
weights, exported by converters/ at --size) trains the search and every baseline with the
same trainer and budget: all-shared, all-shared with uncertainty weighting, the hand-made
last-k policies (own-last-1..3, skip-last-1..3), a random policy matched in size to the
searched one, and one single-task model per task; it then deploys the best on validation.
The data are drawn with the run's seed. Finished runs are kept under --out and reused only if
their config is this one (else the script stops, naming what differs). With
--reuse-baselines DIR, a seed not yet run under --out starts from DIR's finished run of that
seed: its baselines are copied (all but random-matched, sized on the searched policy) when
the two configs differ only in options a fixed-policy baseline never reads (the warm-up,
search, selection and cost sections), so that a new search is judged against the very same
baselines in a fraction of the time.
`onnxmtl.pipeline.evidence` summarises them; the script writes docs/evidence/NAME.json and
NAME.md with the commit, machine and command, and the commit that ran each seed (recorded
beside its run folder at every start, as seedN.starts.json).
The default seeds 120-124 took no part in choosing any default: development used seeds
0-2; seeds 100-104 and 110-114, which earlier evidence ran on, were read while later designs
were chosen (fashion-edges 100-101 in diagnosing the selection, 110-114 before the
selection's start was changed), so they are no longer fresh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import now, provenance  # noqa: E402
from converters import export_backbones  # noqa: E402
from onnxmtl.data import load_dataset  # noqa: E402
from onnxmtl.errors import ConfigError, OnnxMtlError  # noqa: E402
from onnxmtl.pipeline import run  # noqa: E402
from onnxmtl.pipeline.end_to_end import expand_baselines  # noqa: E402
from onnxmtl.pipeline.evidence import (  # noqa: E402
    SEARCH_DEPENDENT,
    baseline_differences,
    check_reusable,
    summarize,
    to_markdown,
)
from onnxmtl.pipeline.run_folders import run_info  # noqa: E402
from onnxmtl.run_folder import PipelineFolder  # noqa: E402
from onnxmtl.training import SearchConfig  # noqa: E402

BASELINES = ("all-shared", "all-shared-uncertainty", "last-k", "random-matched", "single-task")


def backbone(size: int) -> Path:
    return export_backbones.export_backbone(
        "efficientnet_lite0",
        "legacy17",
        ROOT / ".cache" / "bench",
        file_name=f"efficientnet_lite0.{size}.onnx",
        size=size,
    )


def headed_tasks(data: str, head: str | None, config: SearchConfig) -> tuple[list | None, str]:
    """The tasks of dataset `data` with every head set to `head` (None: the dataset's own
    tasks), and the name of their folder under --out."""
    if not head:
        return None, data
    dataset = load_dataset(data, "train", **config.dataset.options)
    return [replace(t, head=head) for t in dataset.tasks()], f"{data}-{head}"


def seed_config(base: SearchConfig, seed: int, device: str, threads: int) -> SearchConfig:
    """The config of one seed's run: the run's seed, and the data drawn with it."""
    options = {**base.dataset.options, "seed": seed}
    return base.with_options(seed=seed, device=device, threads=threads, data=options)


def run_seed(size: int, data: str, tasks, config: SearchConfig, out: Path, meta: dict) -> dict:
    """One seed's `run` results, from its folder when it finished at this very config; a
    start is recorded with the script's `meta`."""
    results_file = out / "results.json"
    if results_file.exists():
        results = json.loads(results_file.read_text())
        check_reusable(results, config.to_dict(), str(results_file))
        selection = out / "search" / "selection.json"  # results.json holds it since 6ffa08d
        if selection.exists() and not results["policy"].get("selection"):
            results["policy"]["selection"] = json.loads(selection.read_text())
        return results
    record_start(out, meta)
    result = run(
        backbone(size), data, out, tasks, config=config, baselines=BASELINES, bench_repeats=10,
        progress=False,
    )  # fmt: skip
    return result.results


def starts_file(out: Path) -> Path:
    """Beside a seed's run folder, the record of the commit at each of its starts."""
    return out.with_name(f"{out.name}.starts.json")


def record_start(out: Path, meta: dict) -> None:
    """Add this start (or resumption) of the run in `out` to its record, so that the page
    names the code that ran each seed, not only the one that summarised it. The commit is
    the script's `meta`, read when it started: the code it runs, even where HEAD has moved
    since."""
    starts = recorded_starts(out)
    starts.append({"commit": meta["commit"], "dirty": meta["dirty"], "written": now()})
    out.parent.mkdir(parents=True, exist_ok=True)
    starts_file(out).write_text(json.dumps(starts, indent=1) + "\n")


def recorded_starts(out: Path) -> list[dict]:
    """The recorded starts of the run in `out`; none for a run from before they were kept."""
    path = starts_file(out)
    return json.loads(path.read_text()) if path.exists() else []


def epochs(steps: int, config: SearchConfig, data_size: int) -> float:
    """How many passes over the training split (the data less the validation share) `steps`
    batches make."""
    return steps * config.dataset.batch_size / (data_size * (1 - config.dataset.val_fraction))


def training_length(config: SearchConfig) -> str:
    """How long every final model trains, in steps and in epochs of the training split where
    the config gives the data's count."""
    steps = config.baseline_length
    text = f"{steps} steps of {config.dataset.batch_size} images"
    count = config.dataset.options.get("count")
    if count:
        text += f", {epochs(steps, config, count):.2f} epochs of the training split"
    return text


def reuse_baselines(source: Path, out: Path, model: Path, data: str, config: SearchConfig) -> None:
    """Start `out` from the finished run in `source`: its baselines (all but those sized on
    the searched policy) and a run.json for `config`. Refused where the model or data differ
    or `config` changes an option the baselines read."""
    stored = json.loads((source / "results.json").read_text())
    differ = baseline_differences(stored["config"], config.to_dict())
    if differ:
        raise ConfigError(
            f"{source}: its baselines were trained with other options ({', '.join(differ)}); "
            "they cannot stand for this config's."
        )
    info = {
        **run_info("pipeline", model, data, None, config),
        "baselines": list(expand_baselines(BASELINES)),
    }
    old = json.loads(PipelineFolder(source).run_file.read_text())
    if (old["model_sha256"], old["data"]) != (info["model_sha256"], info["data"]):
        raise ConfigError(f"{source}: a run of another backbone or dataset.")
    files = PipelineFolder(out)
    for name in info["baselines"]:
        if name not in SEARCH_DEPENDENT and (source / "baselines" / name).is_dir():
            shutil.copytree(source / "baselines" / name, files.baseline(name).path)
    files.run_file.write_text(json.dumps(info, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["fashion-locate"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[120, 121, 122, 123, 124])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo_cpu.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all)")
    parser.add_argument("--size", type=int, default=64, help="backbone input size")
    parser.add_argument("--head", help="give every task this head (aspp, conv, conv1x1, linear)")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "evidence")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "evidence")
    parser.add_argument(
        "--reuse-baselines",
        type=Path,
        help="an earlier --out whose finished runs lend their baselines to seeds not run yet",
    )
    parser.add_argument(
        "--summarize-only", action="store_true", help="write the pages from finished runs only"
    )
    args = parser.parse_args()
    base = SearchConfig.load(args.config)
    meta = provenance(
        "evidence.py", f"{args.threads} thread(s) a run" if args.threads else "every core"
    )
    if args.reuse_baselines:
        meta["baselines_from"] = str(args.reuse_baselines)
    meta["training"] = training_length(base)
    try:
        for data in args.datasets:
            tasks, name = headed_tasks(data, args.head, base)
            runs, starts = {}, {}
            for seed in args.seeds:
                config = seed_config(base, seed, args.device, args.threads)
                out = args.out / name / f"seed{seed}"
                if args.summarize_only and not (out / "results.json").exists():
                    continue
                source = args.reuse_baselines and args.reuse_baselines / name / f"seed{seed}"
                if source and (source / "results.json").exists() and not out.exists():
                    reuse_baselines(source, out, backbone(args.size), data, config)
                runs[seed] = run_seed(args.size, data, tasks, config, out, meta)
                starts[str(seed)] = recorded_starts(out)
                deployed = runs[seed]["deploy"]["model"]
                print(f"{name} seed {seed}: done, run deploys {deployed}", flush=True)
            if not runs:
                continue
            summary = summarize(runs)
            args.docs.mkdir(parents=True, exist_ok=True)
            seed_meta = {**meta, "run_starts": starts}
            record = {**seed_meta, "dataset": name, "config": base.to_dict(), **summary}
            (args.docs / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
            page = to_markdown(name, summary, seed_meta)
            (args.docs / f"{name}.md").write_text(page)
            print(page, flush=True)
    except OnnxMtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
