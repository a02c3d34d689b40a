"""Whether the selection ranks the sharing options as their final models rank: the first
rung of derive 'halving' against the validation metrics of the models the evidence trained.

    .venv/bin/python benchmarks/selection_fidelity.py --evidence .cache/evidence-dev
        [--datasets multi-fashion] [--seeds 0 1] [--variants 10x15@search 10x60@search 30x60 60x60]
        [--train-chosen] [--out .cache/selection-fidelity]
        [--json docs/benchmarks/selection_fidelity.json]

The selection (onnxmtl.training.selection) gives every option of its ladder to every task at
once, fine-tunes each briefly and scores it on train2. Seven of those options are baselines
the evidence trains as final models: all-shared, own-last-1..3 and skip-last-1..3. For each
finished evidence run (--evidence DIR/DATASET/seedN) the search is replayed to its last step
at the run's own config, so that the supermodel is the very one the run's selection measured
(checked: the run's own setting must reproduce the first rung the run recorded), and the
selection is measured again under each --variants setting, STEPSxBATCHES[@START]
(select_steps, select_batches and select_start, 'final' unless given). Per seed and setting
the record gives the seven options' first-rung delta-m and final validation delta-m (both
against all-shared), Spearman's rank correlation of the two, and the regret: how far the
final model of the option the first rung put best lies below the best of the seven. With
--train-chosen, the policy each setting chose (tasks may take different options) is trained
as the run trains its baselines, and its final validation delta-m is recorded beside the
best of the seven (for the run's own setting, the run's searched model is that policy).
Each setting measured is kept under --out and reused while the run's config is unchanged, so
jobs may split --seeds and a last invocation write the record of them all. Development seeds
only: the record informs the selection's defaults, which the evidence's fresh seeds must not.
The record in docs/benchmarks was measured before `select_start: final` was the default, when
that start was named 'backbone' (the labels '@backbone' in it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.evidence import backbone  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from onnxmtl.compiler import Policy  # noqa: E402
from onnxmtl.compiler.candidates import compose, task_options  # noqa: E402
from onnxmtl.compiler.io import load_supermodel  # noqa: E402
from onnxmtl.data import MultiTaskDataset, load_dataset  # noqa: E402
from onnxmtl.errors import OnnxMtlError  # noqa: E402
from onnxmtl.io_utils import atomic_write_text  # noqa: E402
from onnxmtl.pipeline.evidence import check_reusable  # noqa: E402
from onnxmtl.pipeline.stages import compile_for_run, train_baseline  # noqa: E402
from onnxmtl.runtime import cpu_threads  # noqa: E402
from onnxmtl.tasks import delta_m  # noqa: E402
from onnxmtl.training import SearchConfig, Trainer  # noqa: E402
from onnxmtl.training.read_logits import policy_from_logits  # noqa: E402
from onnxmtl.training.selection import select_policy  # noqa: E402

RESULT = ROOT / "docs" / "benchmarks" / "selection_fidelity.json"
UNIFORM = tuple(
    ["all-shared"] + [f"{how}-last-{k}" for how in ("own", "skip") for k in (1, 2, 3)]
)  # options of the ladder that the evidence also trains as final models


def replay_search(
    model_path: Path, train: MultiTaskDataset, config: SearchConfig, out: Path
) -> Trainer:
    """A trainer whose session holds the supermodel at the end of the search of a run at
    `config` on the training split `train`, before the policy is derived: the warm-up and
    the search run as the run ran them, stopping short of the search's finish."""
    if config.cost.model is not None:
        raise OnnxMtlError(f"{out}: a run with a cost model is not replayed here.")
    model = compile_for_run(model_path, train.tasks(), config)
    trainer = Trainer(model, train, config, out, progress=False)
    trainer.run(stop_after=config.warmup.steps + config.search.steps - 1)
    phase = trainer.phase
    if phase is None or phase.name != "search":
        raise OnnxMtlError(f"{out}: the replay did not stop in the search.")
    phase.check_finite(phase.step())
    trainer.session.step += 1
    return trainer


Setting = tuple[int, int, str]  # select_steps, select_batches, select_start


def label(setting: Setting) -> str:
    """A setting as the record names it, STEPSxBATCHES@START."""
    steps, batches, start = setting
    return f"{steps}x{batches}@{start}"


def first_rung(trainer: Trainer, argmax: Policy, setting: Setting, keep: int) -> dict:
    """The selection run again at `setting`: each option's first-rung delta-m against
    all-shared and the combination chosen."""
    run = trainer.session
    kept = run.config
    steps, batches, start = setting
    run.config = kept.with_options(
        select_steps=steps, select_batches=batches, select_start=start, select_keep=keep
    )
    try:
        _, selection = select_policy(run, argmax)
    finally:
        run.config = kept
    return {
        "setting": label(setting),
        "first": {t.picks[0]: t.delta_m for t in selection.first},
        "first_metrics": {t.picks[0]: t.metrics for t in selection.first},
        "chosen": list(selection.chosen),
    }


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (average ranks for ties)."""

    def ranks(values: list[float]) -> np.ndarray:
        values_a = np.asarray(values, dtype=float)
        order = values_a.argsort()
        r = np.empty(len(values_a))
        r[order] = np.arange(len(values_a), dtype=float)
        for v in np.unique(values_a):
            tied = values_a == v
            r[tied] = r[tied].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def fidelity(measured: dict, final: dict[str, float]) -> dict:
    """How the first rung's ranking of the uniform options matches the final models'."""
    names = [n for n in UNIFORM if n in measured["first"] and n in final]
    first = [measured["first"][n] for n in names]
    last = [final[n] for n in names]
    picked = names[int(np.argmax(first))]
    return {
        "options": names,
        "spearman": round(spearman(first, last), 3),
        "first_best": picked,
        "final_best": names[int(np.argmax(last))],
        "regret": round(max(last) - final[picked], 2),
    }


def seed_record(
    evidence: Path, data: str, seed: int, variants: list[Setting], out: Path, train_chosen: bool
) -> dict:
    """One seed's row: the final validation delta-m of the uniform options and, per setting,
    the first rung and its fidelity. Each setting measured is kept in
    out/DATA/seedN/settings.json and reused while the run's config is the one it was
    measured at; a replay always measures the run's own setting first, to check it."""
    folder = evidence / data / f"seed{seed}"
    results = json.loads((folder / "results.json").read_text())
    config = SearchConfig.from_dict(
        json.loads((folder / "search" / "config.json").read_text()), str(folder)
    )
    methods = results["methods"]
    reference = methods["all-shared"]["val_metrics"]
    final = {m: round(delta_m(methods[m]["val_metrics"], reference), 2) for m in UNIFORM}
    final["searched"] = round(delta_m(methods["searched"]["val_metrics"], reference), 2)
    c = config.select
    own = (c.steps, c.batches, c.start)
    wanted = [own, *[v for v in variants if v != own]]
    cache = out / data / f"seed{seed}" / "settings.json"
    measured: dict[str, dict] = {}
    if cache.exists():
        kept = json.loads(cache.read_text())
        check_reusable(kept, config.to_dict(), str(cache))
        measured = kept["settings"]

    def save() -> None:
        text = json.dumps({"config": config.to_dict(), "settings": measured}, indent=1)
        atomic_write_text(cache, text)

    missing = [v for v in wanted if label(v) not in measured]
    if missing:
        recorded = {t["picks"][0]: t["metrics"] for t in results["policy"]["selection"]["first"]}
        with cpu_threads(config.runtime.threads):
            train = load_dataset(data, "train", **config.dataset.options)
            trainer = replay_search(backbone(64), train, config, cache.parent / "replay")
            argmax = policy_from_logits(trainer.model, "argmax")
            for setting in [own, *[v for v in missing if v != own]]:
                row = first_rung(trainer, argmax, setting, c.keep if setting == own else 1)
                first_metrics = row.pop("first_metrics")
                if setting == own and first_metrics != recorded:
                    raise OnnxMtlError(
                        f"{folder}: the replayed search's first rung differs from the run's "
                        "selection.json; the replay is not the run's search."
                    )
                row["first"] = {k: round(v, 2) for k, v in row["first"].items()}
                measured[label(setting)] = row
                save()
                print(json.dumps({"seed": seed, **row, **fidelity(row, final)}), flush=True)
    untrained = [v for v in wanted if "chosen_val_delta_m" not in measured[label(v)]]
    if train_chosen and untrained:
        supermodel = load_supermodel(folder / "search" / "supermodel.pt")
        options = task_options(supermodel, policy_from_logits(supermodel, "argmax"))
        for v in untrained:
            row = measured[label(v)]
            if v == own:  # the run's own selection chose the run's searched model
                row["chosen_val_delta_m"] = final["searched"]
            else:
                policy = compose(supermodel, options, row["chosen"])
                chosen = cache.parent / f"chosen-{'-'.join(row['chosen'])}"
                metrics = train_chosen_policy(data, config, policy, chosen)
                row["chosen_val_delta_m"] = round(delta_m(metrics, reference), 2)
            save()
    rows = [{**measured[label(v)], **fidelity(measured[label(v)], final)} for v in wanted]
    return {"data": data, "seed": seed, "final_val_delta_m": final, "settings": rows}


def train_chosen_policy(
    data: str, config: SearchConfig, policy: Policy, out: Path
) -> dict[str, dict[str, float]]:
    """Validation metrics of `policy` (the one a setting chose) trained in `out` as the run
    trains its final models."""
    result = train_baseline(
        backbone(64), data, out, "policy", config=config, policy=policy, force=True,
        progress=False,
    )  # fmt: skip
    return next(iter(result.values())).metrics["val"]


def table_rows(seed: dict) -> list[dict]:
    """One seed's rows of the record's table: per setting, the fidelity figures."""
    return [
        {
            "data": seed["data"],
            "seed": seed["seed"],
            "select steps x batches @ start": row["setting"],
            "spearman": row["spearman"],
            "first-rung best": row["first_best"],
            "final best (val)": row["final_best"],
            "regret (delta-m points)": row["regret"],
            "chosen (per task)": ", ".join(row["chosen"]),
            "chosen final val delta-m": row.get("chosen_val_delta_m", "-"),
            "best uniform final val delta-m": max(seed["final_val_delta_m"][n] for n in UNIFORM),
        }
        for row in seed["settings"]
    ]


def setting(text: str) -> Setting:
    """A --variants setting, STEPSxBATCHES[@START]."""
    size, _, start = text.partition("@")
    steps, batches = (int(x) for x in size.split("x"))
    if start not in ("", "search", "final"):
        raise ValueError(text)
    return steps, batches, start or "final"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evidence", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=["multi-fashion"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--variants", nargs="+", default=["10x15@search", "10x60@search", "30x60", "60x60"]
    )
    parser.add_argument(
        "--train-chosen",
        action="store_true",
        help="train each setting's chosen policy as a final model (validation delta-m)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "selection-fidelity")
    parser.add_argument("--json", type=Path, default=RESULT)
    args = parser.parse_args()
    try:
        variants = [setting(v) for v in args.variants]
    except ValueError:
        print(
            f"error: --variants are STEPSxBATCHES[@search|@final], e.g. 10x15@search or "
            f"60x60; got {' '.join(args.variants)}.",
            file=sys.stderr,
        )
        return 2
    try:
        seeds = [
            seed_record(args.evidence, data, seed, variants, args.out, args.train_chosen)
            for data in args.datasets
            for seed in args.seeds
        ]
    except (OnnxMtlError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = {
        **provenance("selection_fidelity.py", "threads as each run's config"),
        "results": {"rows": [row for seed in seeds for row in table_rows(seed)], "seeds": seeds},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
