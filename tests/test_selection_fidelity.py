"""benchmarks/selection_fidelity.py: the replayed search is the run's own (its selection
measures what the run's measured), and the fidelity figures follow their definitions."""

from __future__ import annotations

import json

import pytest

import onnxmtl
from onnxmtl.data import Scenes
from onnxmtl.runtime import cpu_threads
from onnxmtl.training import SearchConfig, Trainer
from onnxmtl.training.read_logits import policy_from_logits
from tests.conftest import load_script


def script():
    return load_script("benchmarks/selection_fidelity.py")


def test_the_replayed_search_measures_what_the_runs_selection_measured(tiny_export, tmp_path):
    train = Scenes("train", count=64, size=32, cache_dir=tmp_path / "data")
    config = SearchConfig().with_options(
        batch_size=4, warmup_steps=2, search_steps=3, post_train_steps=3, derive="halving",
        select_steps=1, select_keep=1, select_batches=2, select_batchnorm_batches=1,
        checkpoint_every=0, threads=1,
    )  # fmt: skip
    model_path = tiny_export("legacy17", fold_bn=True)
    with cpu_threads(1):
        model = onnxmtl.compile(onnxmtl.load(model_path), train.tasks())
        Trainer(model, train, config, tmp_path / "run", progress=False).run()
        module = script()
        trainer = module.replay_search(model_path, train, config, tmp_path / "replay")
        argmax = policy_from_logits(trainer.model, "argmax")
        measured = module.first_rung(trainer, argmax, (1, 2, "final"), keep=1)
    saved = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert measured["first_metrics"] == {t["picks"][0]: t["metrics"] for t in saved["first"]}
    assert measured["chosen"] == saved["chosen"]
    assert trainer.session.config == config  # the setting measured was put back


def test_fidelity_ranks_the_uniform_options_and_prices_the_first_rungs_pick():
    module = script()
    names = module.UNIFORM  # all-shared, own-last-1..3, skip-last-1..3
    first = dict(zip(names, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    final = dict(zip(names, [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 5.0]))  # the last two swapped
    measured = {"first": first}
    result = module.fidelity(measured, final)
    # rank differences 0,0,0,0,0,1,1: rho = 1 - 6 * 2 / (7 * 48) = 27/28
    assert result["spearman"] == pytest.approx(27 / 28, abs=1e-3)
    assert result["first_best"] == "skip-last-3" and result["final_best"] == "skip-last-2"
    assert result["regret"] == pytest.approx(1.0)
    assert module.spearman([1, 1, 2], [3, 3, 4]) == pytest.approx(1.0)  # ties share a rank
