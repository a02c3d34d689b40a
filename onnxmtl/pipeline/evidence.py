"""The evidence protocol: many `run`s of one task set over seeds, summarised honestly.

Every seed's `run` trains the search and the baselines alike and chooses on validation; this
module turns their results into what a sceptical reader needs: validation and test delta-m
side by side against the mean of the single-task models over the seeds (so that one noisy
reference model cannot move every figure), the single-task models' own spread, paired
differences with 95% intervals, how often `run` deployed the searched model, and how much the
searched policies agree from seed to seed. `benchmarks/evidence.py` runs it and writes the
files under docs/evidence/.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from onnxmtl.compiler import LAST_K_POLICIES
from onnxmtl.errors import ConfigError
from onnxmtl.tasks import DELTA_M_DEFINITION, delta_m, mean_metrics
from onnxmtl.training.config import FLAT

# Student's t two-sided 95% quantiles by degrees of freedom (from any statistics table); from
# 31 on, the normal's 1.96 is within 4% of them.
T95: tuple[float, ...] = (
    *(12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228),
    *(2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086),
    *(2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042),
)
SPLITS = ("val", "test")


@dataclass(frozen=True)
class Interval:
    """The mean of paired differences and its two-sided 95% t interval (NaN below 2 pairs)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def above_zero(self) -> bool:
        return self.low > 0

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f} (n={self.n})"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def mean_and_spread(stats: dict[str, float]) -> str:
    """`stats` ('mean', 'std' over seeds) as "+m ± s", or "+m (n=1)" where one seed leaves
    no spread."""
    if math.isnan(stats["std"]):
        return f"{stats['mean']:+.2f} (n=1)"
    return f"{stats['mean']:+.2f} ± {stats['std']:.2f}"


def paired_interval(differences: list[float]) -> Interval:
    """Mean and 95% t interval of paired differences (seed by seed)."""
    values = np.asarray(differences, float)
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    t = T95[n - 2] if n - 1 <= len(T95) else 1.96
    half = t * float(values.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def policy_agreement(policies: list[list[list[int]]]) -> float:
    """The mean, over every pair of policies, of the share of (task, unit) choices they make
    alike (NaN for fewer than two)."""
    pairs = list(itertools.combinations(policies, 2))
    if not pairs:
        return math.nan
    shares = []
    for a, b in pairs:
        flat_a = [c for row in a for c in row]
        flat_b = [c for row in b for c in row]
        shares.append(float(np.mean([x == y for x, y in zip(flat_a, flat_b)])))
    return float(np.mean(shares))


def check_reusable(results: dict[str, Any], config: dict[str, Any], source: str) -> None:
    """Refuse a finished run's results whose config is not `config` (a run from before a
    default changed must not join the evidence), naming every option that differs."""
    stored = results.get("config", {})
    differ = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
    if differ:
        details = ", ".join(f"{k} {stored.get(k)!r} -> {config.get(k)!r}" for k in differ)
        raise ConfigError(
            f"{source}: a finished run with another config ({details}); delete that folder "
            "to run it again at this config, or give the config it was run with."
        )


# The sections whose options a fixed-policy baseline's training never reads (it skips warm-up,
# search and selection, has no cost, and deploying comes after it); `skip_projection` is
# read, by the compiler.
UNREAD_BY_BASELINES = ("warmup", "search", "select", "cost", "deploy")
# Baselines trained on the searched policy (its size), which a new search must retrain.
SEARCH_DEPENDENT = ("random-matched",)


def baseline_differences(stored: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The options of `config` (flat) that differ from a finished run's `stored` config and
    that a fixed-policy baseline's training reads: where there are none, its baselines are the
    ones `config` would train. The length of the baselines is read from the search's sections
    too, unless they post-train from the backbone."""
    free = {
        name
        for name, (section, field) in FLAT.items()
        if section in UNREAD_BY_BASELINES and field != "skips"
    } | {"cost"}
    if config.get("post_train_init") != "backbone":
        free = set()
    keys = set(stored) | set(config)
    return sorted(k for k in keys if k not in free and stored.get(k) != config.get(k))


def best_on_validation(methods: dict[str, dict[str, Any]], names: tuple[str, ...]) -> str:
    """Which of `names` (those present) a person would pick: the best validation delta-m."""
    present = [n for n in names if n in methods]
    if not present:
        raise ConfigError(f"none of {', '.join(names)} among the results.")
    return max(present, key=lambda n: methods[n]["val_delta_m"])


def summarize(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The evidence of one task set from each seed's `run` results (results.json by seed):
    per method and seed the validation and test delta-m against the mean single-task models,
    paired intervals of the searched model against all-shared, the best last-k and the
    better of the two (each picked on validation, seed by seed), how often `run` deployed the
    searched model, how often it scored best of all on test (how often a choice on validation
    that always agreed with test would deploy it), and the searched policies' agreement across
    seeds."""
    seeds = sorted(runs)
    if not seeds:
        raise ConfigError("no finished run to summarise.")
    for seed in seeds:
        if "single-task" not in runs[seed]["methods"]:
            raise ConfigError(f"seed {seed}: the run trained no single-task models.")
    reference = {
        split: mean_metrics([runs[s]["methods"]["single-task"][_key(split)] for s in seeds])
        for split in SPLITS
    }
    names = list(runs[seeds[0]]["methods"])
    table: dict[str, dict[str, list[float]]] = {m: {s: [] for s in SPLITS} for m in names}
    shares: dict[str, list[float]] = {m: [] for m in names}
    per_seed = []
    for seed in seeds:
        methods = runs[seed]["methods"]
        scores = {
            m: {s: delta_m(methods[m][_key(s)], reference[s]) for s in SPLITS} for m in methods
        }
        for m in names:
            for s in SPLITS:
                table[m][s].append(scores[m][s])
            shares[m].append(methods[m]["param_share"])
        ranked = {m: {"val_delta_m": scores[m]["val"]} for m in methods}
        last_k = best_on_validation(ranked, LAST_K_POLICIES)
        better = best_on_validation(ranked, ("all-shared", last_k))
        per_seed.append(
            {
                "seed": seed,
                "delta_m": scores,
                "best_last_k": last_k,
                "better_baseline": better,
                "deployed": runs[seed]["deploy"]["model"],
                "best_on_test": max(scores, key=lambda m: scores[m]["test"]),
                "policy_counts": runs[seed]["policy"]["counts"],
                "selected": _selected(runs[seed]),
            }
        )
    gaps = {}
    for label, pick in (
        ("all-shared", lambda row: "all-shared"),
        ("best last-k (on val)", lambda row: row["best_last_k"]),
        ("better of all-shared and last-k (on val)", lambda row: row["better_baseline"]),
        *((m, lambda row, m=m: m) for m in ("random-matched", "all-shared-uncertainty")),
    ):
        if all(pick(row) in row["delta_m"] for row in per_seed):
            gaps[f"searched - {label}"] = {
                s: asdict(
                    paired_interval(
                        [
                            row["delta_m"]["searched"][s] - row["delta_m"][pick(row)][s]
                            for row in per_seed
                        ]
                    )
                )
                for s in SPLITS
            }
    return {
        "delta_m_definition": DELTA_M_DEFINITION,
        "reference": "the single-task models' metrics averaged over the seeds",
        "reference_metrics": reference,
        "seeds": seeds,
        "methods": {
            m: {
                **{
                    s: {"mean": _mean(table[m][s]), "std": _std(table[m][s]), "runs": table[m][s]}
                    for s in SPLITS
                },
                "param_share": _mean(shares[m]),
            }
            for m in names
        },
        "gaps": gaps,
        "deployed_searched": sum(row["deployed"] == "searched" for row in per_seed),
        "searched_best_on_test": sum(row["best_on_test"] == "searched" for row in per_seed),
        "policy_agreement": policy_agreement([runs[s]["policy"]["choices"] for s in seeds]),
        "same_candidate": same_candidate([row["selected"] for row in per_seed]),
        "per_seed": per_seed,
    }


def _selected(results: dict[str, Any]) -> dict[str, str] | None:
    """Each task's option in the candidate derive 'halving' chose (None for other methods)."""
    selection = results["policy"].get("selection")
    if not selection:
        return None
    return dict(zip((t["name"] for t in results["tasks"]), selection["chosen"]))


def same_candidate(selected: list[dict[str, str] | None]) -> int | None:
    """In how many seeds the selection chose its most frequent candidate (None where a seed's
    run did not select)."""
    if not selected or any(s is None for s in selected):
        return None
    counts = Counter(tuple(sorted(s.items())) for s in selected if s is not None)
    return counts.most_common(1)[0][1]


def _key(split: str) -> str:
    return "val_metrics" if split == "val" else "metrics"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def runs_at(starts: dict[str, list[dict[str, Any]]]) -> str:
    """Which commit ran each seed, from each seed's record of its starts (a resumed run has
    several), seeds grouped by their commits: "`7a1873a` (seeds 120, 121); not recorded
    (seed 122)". The page's own commit is only the summary's."""
    groups: dict[str, list[str]] = {}
    for seed, records in starts.items():
        names = (
            f"`{r['commit'][:7]}`" + (" with uncommitted changes" if r["dirty"] else "")
            for r in records
        )
        groups.setdefault(", ".join(dict.fromkeys(names)) or "not recorded", []).append(seed)
    return "; ".join(
        f"{key} (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
        for key, seeds in groups.items()
    )


def to_markdown(name: str, summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The generated page of one task set's evidence: where it came from, then its tables."""
    seeds = ", ".join(map(str, summary["seeds"]))
    lines = [
        f"# Evidence: {name}",
        "",
        "Generated by `benchmarks/evidence.py`; do not edit by hand.",
        "",
        f"- command: `{meta['command']}`",
        f"- commit of this summary: `{meta['commit']}`"
        + (" (with uncommitted changes)" if meta["dirty"] else ""),
        *([f"- runs at: {runs_at(meta['run_starts'])}"] if "run_starts" in meta else []),
        f"- machine: {meta['machine']}",
        f"- written: {meta['written']}",
        f"- seeds: {seeds} (the data drawn with the run's seed)",
        f"- {summary['delta_m_definition']}; reference: {summary['reference']}",
        *([f"- baselines from: `{meta['baselines_from']}`"] if meta.get("baselines_from") else []),
        *([f"- every final model trains {meta['training']}"] if meta.get("training") else []),
        "",
        "## delta-m % by model (mean ± std over seeds)",
        "",
        "| model | validation | test | params / single-task |",
        "|---|---|---|---|",
    ]
    for method, row in summary["methods"].items():
        cells = [mean_and_spread(row[s]) for s in SPLITS]
        lines.append(f"| {method} | {cells[0]} | {cells[1]} | {row['param_share']:.2f} |")
    reference = summary.get("reference_metrics", {}).get("test", {})
    measured = "; ".join(
        f"{task} " + ", ".join(f"{name} {value:.3f}" for name, value in metrics.items())
        for task, metrics in reference.items()
    )
    lines += [
        "",
        "The single-task row's spread is that of the reference models themselves"
        + (f"; their test metrics, averaged over the seeds: {measured}." if measured else "."),
        "",
        "## Paired gaps of the searched model (delta-m points, mean [95% t interval])",
        "",
        "| against | validation | test | test interval above 0 |",
        "|---|---|---|---|",
    ]
    for label, gap in summary["gaps"].items():
        val, test = Interval(**gap["val"]), Interval(**gap["test"])
        lines.append(
            f"| {label.removeprefix('searched - ')} | {val} | {test} | "
            f"{'yes' if test.above_zero else 'no'} |"
        )
    n = len(summary["seeds"])
    agreement = summary["policy_agreement"]
    lines += [
        "",
        "## Choice and stability",
        "",
        f"- `run` deployed the searched model in {summary['deployed_searched']} of {n} seeds "
        "(chosen on validation among every model above).",
        f"- On test, the searched model scored best of every model above in "
        f"{summary['searched_best_on_test']} of {n} seeds: a choice on validation that always "
        "agreed with test would deploy it that often.",
        f"- The searched policies agree on {agreement:.0%} of their (task, unit) choices, "
        "averaged over pairs of seeds (which differ in data, initial heads and Gumbel noise)."
        if not math.isnan(agreement)
        else "- How much the searched policies agree needs two seeds or more.",
    ]
    if summary.get("same_candidate") is not None:
        lines.append(
            f"- The selection (derive 'halving') chose the same candidate in "
            f"{summary['same_candidate']} of {n} seeds."
        )
    lines += [
        "",
        "| seed | deployed | best on test | best last-k (val) | "
        "searched policy: shared / own / skip | selected (per task) |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["per_seed"]:
        c = row["policy_counts"]
        picks = row.get("selected")
        chosen = ", ".join(f"{t}: {p}" for t, p in picks.items()) if picks else "-"
        lines.append(
            f"| {row['seed']} | {row['deployed']} | {row['best_on_test']} | {row['best_last_k']} | "
            f"{c['shared']} / {c['specific']} / {c['skip']} | {chosen} |"
        )
    return "\n".join(lines) + "\n"
