"""The evidence protocol: paired intervals, the reference over seeds, baselines picked on
validation, policy agreement, and the refusal of a finished run at another config."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import pytest

from onnxmtl.compiler import LAST_K_POLICIES
from onnxmtl.errors import ConfigError
from onnxmtl.pipeline.evidence import (
    baseline_differences,
    check_reusable,
    mean_and_spread,
    paired_interval,
    policy_agreement,
    runs_at,
    same_candidate,
    summarize,
    to_markdown,
)
from onnxmtl.training import SearchConfig
from tests.conftest import ROOT, load_script

PAGE_META = {"command": "c", "commit": "abc", "dirty": False, "machine": "m", "written": "w"}


def test_one_seed_shows_no_spread():
    """A single seed's std is NaN: the table says n=1 rather than "± nan"."""
    assert mean_and_spread({"mean": 0.031, "std": math.nan}) == "+0.03 (n=1)"
    assert mean_and_spread({"mean": -1.5, "std": 0.25}) == "-1.50 ± 0.25"


def test_paired_interval_is_the_t_interval_of_the_differences():
    # by hand: mean 3, sample sd sqrt(2.5) = 1.5811, t(4 df, 97.5%) = 2.776:
    # half-width 2.776 * 1.5811 / sqrt(5) = 1.9629
    interval = paired_interval([1, 2, 3, 4, 5])
    assert interval.mean == 3 and interval.n == 5
    assert interval.low == pytest.approx(1.0371, abs=1e-4)
    assert interval.high == pytest.approx(4.9629, abs=1e-4)
    assert interval.above_zero and not paired_interval([-1, 2, 3]).above_zero
    one = paired_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and not one.above_zero
    values = [float(i % 3) for i in range(40)]
    wide = paired_interval(values)  # 39 degrees of freedom, beyond the table: the normal's
    assert wide.high - wide.mean == pytest.approx(1.96 * statistics.stdev(values) / math.sqrt(40))


def test_policy_agreement_averages_pairs():
    a, b, c = [[0, 0], [1, 2]], [[0, 0], [1, 0]], [[1, 1], [2, 0]]
    # a-b agree on 3 of 4, a-c on 0, b-c on 1: mean 4/12
    assert policy_agreement([a, b, c]) == pytest.approx(1 / 3)
    assert math.isnan(policy_agreement([a]))


def test_a_finished_run_at_another_config_is_refused():
    config = SearchConfig().to_dict()
    check_reusable({"config": config}, config, "r.json")
    stale = {**config, "search_steps": 7}
    with pytest.raises(ConfigError, match=r"r.json: .*search_steps 7 -> 150"):
        check_reusable({"config": stale}, config, "r.json")


def _results(seed: int, searched: float, shared: float, last_k: dict, single: float) -> dict:
    """A run's results.json with one task, one metric: accuracy on validation and on test
    (test = validation + 0.1, so that a pick made on test would differ from one on val only
    where the test order differs)."""

    def entry(val: float, test: float | None = None) -> dict:
        test = val + 0.1 if test is None else test
        return {
            "val_metrics": {"t": {"accuracy": val}},
            "metrics": {"t": {"accuracy": test}},
            "param_share": 0.5,
        }

    methods = {"searched": entry(searched), "all-shared": entry(shared)}
    methods.update({name: entry(*value) for name, value in last_k.items()})
    methods["single-task"] = entry(single)
    return {
        "config": {"seed": seed},
        "methods": methods,
        "deploy": {"model": "searched" if seed else "all-shared"},
        "policy": {"counts": {"shared": 1, "specific": 1, "skip": 0}, "choices": [[0, 1]]},
    }


def test_summary_compares_with_baselines_picked_on_validation():
    # own-last-1 is best on validation, own-last-2 on test: the pick is own-last-1
    last_k = {name: (0.40,) for name in LAST_K_POLICIES}
    last_k["own-last-1"] = (0.55, 0.56)
    last_k["own-last-2"] = (0.45, 0.90)
    runs = {
        1: _results(1, searched=0.60, shared=0.50, last_k=last_k, single=0.40),
        2: _results(2, searched=0.60, shared=0.50, last_k=last_k, single=0.60),
    }
    summary = summarize(runs)
    # the reference is the mean single-task model: 0.5 on val, 0.6 on test
    assert summary["methods"]["searched"]["val"]["runs"] == pytest.approx([20.0, 20.0])
    assert summary["methods"]["single-task"]["val"]["runs"] == pytest.approx([-20.0, 20.0])
    assert [row["best_last_k"] for row in summary["per_seed"]] == ["own-last-1"] * 2
    gap = summary["gaps"]["searched - best last-k (on val)"]["test"]
    # searched test 0.70, own-last-1 test 0.56, against 0.6: (0.70 - 0.56) / 0.6 = +23.33
    assert gap["mean"] == pytest.approx(23.333, abs=1e-3) and gap["n"] == 2
    better = summary["gaps"]["searched - better of all-shared and last-k (on val)"]
    assert better["test"]["mean"] == pytest.approx(gap["mean"])  # own-last-1 beats all-shared
    assert summary["deployed_searched"] == 2 and summary["policy_agreement"] == 1.0
    assert [row["best_on_test"] for row in summary["per_seed"]] == ["own-last-2"] * 2
    assert summary["searched_best_on_test"] == 0
    page = to_markdown("toy", summary, PAGE_META)
    assert "| best last-k (on val) | +20.00 (n=2)" not in page  # two seeds give an interval
    assert "`run` deployed the searched model in 2 of 2 seeds" in page
    assert "The searched policies agree on 100% of their (task, unit) choices" in page
    alone = to_markdown("toy", summarize({1: runs[1]}), PAGE_META)
    assert "How much the searched policies agree needs two seeds or more." in alone
    assert "nan" not in alone


def test_summary_counts_the_seeds_where_searched_is_best_on_test():
    last_k = {name: (0.40,) for name in LAST_K_POLICIES}
    beaten = {**last_k, "own-last-2": (0.45, 0.90)}  # seed 2: own-last-2 leads on test
    runs = {
        1: _results(1, searched=0.60, shared=0.50, last_k=last_k, single=0.40),
        2: _results(2, searched=0.60, shared=0.50, last_k=beaten, single=0.40),
    }
    summary = summarize(runs)
    assert [row["best_on_test"] for row in summary["per_seed"]] == ["searched", "own-last-2"]
    assert summary["searched_best_on_test"] == 1
    page = to_markdown("toy", summary, PAGE_META)
    assert "the searched model scored best of every model above in 1 of 2 seeds" in page
    assert "| 2 | searched | own-last-2 | own-last-2 |" in page  # deployed, best on test, last-k


def test_evidence_script_refuses_a_stale_run_in_one_line(tmp_path):
    out = tmp_path / "runs" / "fashion-locate" / "seed100"
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({"config": {"seed": 100}}))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "evidence.py"),
            "--summarize-only",
            "--seeds",
            "100",
            "--out",
            str(tmp_path / "runs"),
            "--docs",
            str(tmp_path / "docs"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "results.json" in lines[0]
    assert not (tmp_path / "docs").exists()  # nothing half-written


def test_baselines_are_reused_only_across_options_they_never_read():
    config = SearchConfig().with_options(post_train_init="backbone")
    stored = config.to_dict()
    searchish = config.with_options(
        derive="argmax", select_steps=3, search_steps=7, warmup_steps=2, cost="params"
    )
    assert baseline_differences(stored, searchish.to_dict()) == []
    other = config.with_options(batch_size=8, skip_projection="none", derive="argmax")
    assert baseline_differences(stored, other.to_dict()) == ["batch_size", "skip_projection"]
    # post-trained from the search's weights, the baselines' length follows the search's
    from_search = {**stored, "post_train_init": "search"}
    assert "search_steps" in baseline_differences(
        from_search, {**searchish.to_dict(), "post_train_init": "search"}
    )


def test_the_same_candidate_counts_the_seeds_that_chose_the_most_frequent_one():
    a, b = {"x": "skip-last-3", "y": "all-shared"}, {"x": "skip-last-5", "y": "all-shared"}
    assert same_candidate([a, dict(reversed(list(a.items()))), b]) == 2
    assert same_candidate([a, b]) == 1
    assert same_candidate([a, None]) is None and same_candidate([]) is None


def test_the_training_length_is_given_in_epochs_of_the_training_split():
    script = load_script("benchmarks/evidence.py")
    config = SearchConfig().with_options(
        post_train_steps=150, batch_size=32, data={"count": 8000}, val_fraction=0.1
    )
    # 150 * 32 images over 8,000 * 0.9 training images
    assert (
        script.training_length(config)
        == "150 steps of 32 images, 0.67 epochs of the training split"
    )
    assert script.training_length(SearchConfig()) == "200 steps of 32 images"


def test_each_start_of_a_seed_records_the_commit_that_ran_it(tmp_path):
    script = load_script("benchmarks/evidence.py")
    out = tmp_path / "fashion-locate" / "seed120"
    assert script.recorded_starts(out) == []
    meta = script.provenance("evidence.py", "1 thread(s) a run")
    script.record_start(out, meta)
    script.record_start(out, meta)  # resumed
    starts = script.recorded_starts(out)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert [s["commit"] for s in starts] == [head, head]
    assert not out.exists()  # recorded beside the run folder, which `run` owns


def test_the_page_names_the_commits_that_ran_the_seeds():
    a = {"commit": "7a1873a" + "0" * 33, "dirty": False}
    b = {"commit": "fffd6c8" + "0" * 33, "dirty": True}
    assert runs_at({"120": [a], "121": [a, a], "122": [], "123": [a, b]}) == (
        "`7a1873a` (seeds 120, 121); not recorded (seed 122); "
        "`7a1873a`, `fffd6c8` with uncommitted changes (seed 123)"
    )
