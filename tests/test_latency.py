"""Measured-latency costs: branch run counts, the latency table, its cache, and a search under
a latency budget."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import onnxmtl
from onnxmtl.compiler import SHARED, SKIP, SPECIFIC, Projection, save_supermodel
from onnxmtl.compiler.policy_cost import expected_runs, full_cost
from onnxmtl.cost import (
    ancestor_matrix,
    cache,
    fit_to_budget,
    latency_table,
    make_cost,
    model_ancestors,
)
from onnxmtl.cost.fit import fit_coefficients
from onnxmtl.data import Scenes
from onnxmtl.derived import derive
from onnxmtl.errors import ConfigError
from onnxmtl.tasks import Task
from onnxmtl.training import SearchConfig, Trainer, cost_regularizer, expected_cost
from onnxmtl.training.regularizers import current_policy
from tests.helpers import assert_clean_error, run_cli

TASKS = [Task("a", "depth"), Task("b", "normals"), Task("c", "depth")]
TINY = dict(batch_size=4, warmup_steps=2, search_steps=6, post_train_steps=2)


@pytest.fixture(scope="module")
def model(tiny_export):
    return onnxmtl.compile(onnxmtl.load(tiny_export("legacy17")), TASKS)


@pytest.fixture(scope="module")
def table(model, tmp_path_factory):
    return latency_table(model, "cpu", cache_dir=tmp_path_factory.mktemp("lat"), progress=False)


def _one_hot(choices) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(choices), 3).double()


def test_runs_of_a_hard_policy_are_the_derived_models_blocks(model):
    """Shared units after a branch-off run once per distinct value, as the derived model does."""
    anc = ancestor_matrix(model_ancestors(model))
    projection = torch.tensor([isinstance(b.skip, Projection) for b in model.units]).double()
    rng = random.Random(0)
    mask = model.branch_mask
    for _ in range(20):
        weights = [rng.random() for _ in range(3)]
        choices = [
            [
                rng.choices(
                    [b for b in range(3) if mask[u, b]],
                    [weights[b] for b in range(3) if mask[u, b]],
                )[0]
                for u in range(len(model.units))
            ]
            for _ in TASKS
        ]
        counts = derive(model, choices).branch_counts()
        runs = expected_runs(_one_hot(choices), anc)
        assert float(runs[:, SHARED].sum()) == pytest.approx(counts["shared"], abs=1e-6)
        assert float(runs[:, SPECIFIC].sum()) == counts["specific"]
        assert float((runs[:, SKIP] * projection).sum()) == pytest.approx(counts["skip"], abs=1e-6)


def test_relaxed_runs_for_two_tasks_by_hand():
    """Two units in a chain: unit 1's shared branch runs p1 + p2 - p1 p2 g times, where g is
    the chance both tasks left unit 0 with the same value (both shared or both skipped)."""
    probs = torch.tensor(
        [[[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]], [[0.4, 0.4, 0.2], [0.7, 0.2, 0.1]]],
        dtype=torch.float64,
    )
    anc = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    runs = expected_runs(probs, anc)
    g = 0.5 * 0.4 + 0.2 * 0.2
    assert float(runs[0, SHARED]) == pytest.approx(0.5 + 0.4 - 0.5 * 0.4)
    assert float(runs[1, SHARED]) == pytest.approx(0.6 + 0.7 - 0.6 * 0.7 * g)
    assert float(runs[1, SKIP]) == pytest.approx(0.3 + 0.1 - 0.3 * 0.1 * g)
    assert float(runs[1, SPECIFIC]) == pytest.approx(0.1 + 0.2)
    copies = expected_runs(probs)  # parameters: one shared copy if any task takes it
    assert float(copies[1, SHARED]) == pytest.approx(1 - 0.4 * 0.3)


def test_table_predicts_with_its_fitted_coefficients(model, table):
    assert len(table.unit_ms) == len(model.units)
    assert table.scale > 0 and table.skip_scale > 0
    c = table.calibration
    for name, branch in (("all-shared", SHARED), ("all-specific", SPECIFIC), ("all-skip", SKIP)):
        predicted = table.predict(model.choices_of(model.uniform_policy(branch)))
        fitted = table.base_ms + table.scale * c[f"units_{name}_ms"]
        fitted += table.skip_scale * c[f"skips_{name}_ms"]
        assert predicted == pytest.approx(fitted, rel=1e-9)
    for u in range(len(model.units)):
        if not model.branch_mask[u, SKIP]:
            assert table.skip_ms[u] == 0
    shared = table.predict(model.choices_of(model.uniform_policy(SHARED)))
    assert shared < table.predict(model.choices_of(model.uniform_policy(SPECIFIC)))
    assert table.fastest(model.branch_mask) <= shared + 1e-9


def test_fit_through_the_calibration_models():
    """Three models fix base, unit scale and skip scale; without skips one scale serves."""
    sums = [(2.0, 0.0), (6.0, 0.0), (0.0, 1.5)]
    measured = [0.5 + 0.4 * 2, 0.5 + 0.4 * 6, 0.5 + 0.7 * 1.5]
    assert fit_coefficients(sums, measured) == pytest.approx((0.5, 0.4, 0.7))
    no_skips = [(2.0, 0.0), (6.0, 0.0), (2.0, 0.0)]
    assert fit_coefficients(no_skips, [1.3, 2.9, 1.3]) == pytest.approx((0.5, 0.4, 0.4))
    slower = [0.3, 0.1, 0.2]  # slower with fewer units: noise
    base, scale, skip_scale = fit_coefficients(sums, slower)
    assert base == 0 and scale == skip_scale > 0


def test_table_is_cached_per_model_and_setting(model, table, tmp_path, monkeypatch):
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    latency_table(model, "cpu", cache_dir=tmp_path, progress=False)
    assert model.training  # measured on copies: the model being trained is left alone
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(list(tmp_path.glob("*.json"))) == 1

    def no_measuring(*args, **kwargs):
        raise AssertionError("a cached table was measured again")

    monkeypatch.setattr(cache, "measure_latency_table", no_measuring)
    again = latency_table(model, "cpu", cache_dir=tmp_path, progress=False)
    assert again.unit_ms == latency_table(model, "cpu", cache_dir=tmp_path).unit_ms
    with pytest.raises(AssertionError, match="measured again"):
        latency_table(model, "cpu", batch=2, cache_dir=tmp_path, progress=False)
    other = onnxmtl.compile(onnxmtl.load(model.graph.source), TASKS[:2])
    with pytest.raises(AssertionError, match="measured again"):
        latency_table(other, "cpu", cache_dir=tmp_path, progress=False)


def test_search_under_a_latency_budget(tiny_export, tmp_path):
    cache = tmp_path / "cache"
    train = Scenes("train", count=32, size=32, cache_dir=tmp_path)
    tasks = train.tasks()
    fresh = onnxmtl.compile(onnxmtl.load(tiny_export("legacy17")), tasks)
    t = latency_table(fresh, "cpu", cache_dir=cache, progress=False)
    budget = t.predict(fresh.choices_of(fresh.uniform_policy(SHARED)))
    config = SearchConfig().with_options(
        **TINY, latency_budget_ms=budget, latency_provider="cpu", latency_cache=str(cache)
    )
    assert config.cost.model == "latency" and config.to_dict()["cost"] == "latency"
    trainer = Trainer(
        fresh, train, config, tmp_path / "run", progress=False, cost=make_cost(fresh, config)
    )
    result = trainer.run()
    info = json.loads((tmp_path / "run" / "latency.json").read_text())
    assert info["budget_ms"] == budget and info["predicted_ms"] <= budget + 1e-9
    # the selection's choice among the combinations within the budget, then fitted to it
    assert result.policy.method == "selected+budget"
    assert info["predicted_ms"] == pytest.approx(t.predict(result.policy.choices))
    assert info["fastest_ms"] <= info["all_shared_ms"] < info["all_specific_ms"]
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in rows if r["phase"] == "search"]
    # The search computes in float32 from latencies of the budget's size: a few ulps of those,
    # as a share of the all-specific latency, is the resolution of a cost near 0.
    ulps = 4 * float(np.finfo(np.float32).eps) * budget / info["all_specific_ms"]
    for r in search:  # the cost is the predicted excess over the budget, as a share of the
        # all-specific model's latency, and nothing under it
        excess = max(0.0, r["latency_ms"] - budget) / info["all_specific_ms"]
        assert r["cost"] == pytest.approx(excess, rel=1e-4, abs=ulps)
    unit, skip = (c.float() for c in t.costs())
    probs = _one_hot(result.policy.choices).float()
    expected = float(expected_cost(probs, unit, skip, t.ancestor_matrix.float()))
    assert info["predicted_ms"] == pytest.approx(t.base_ms + expected, rel=1e-5)

    too_fast = SearchConfig().with_options(
        **TINY,
        latency_budget_ms=info["fastest_ms"] / 2,
        latency_provider="cpu",
        latency_cache=str(cache),
    )
    with pytest.raises(ConfigError, match="latency_budget_ms=.* is below the fastest model"):
        make_cost(fresh, too_fast)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latency_budget_ms": -1}, "latency_budget_ms must be"),
        ({"latency_budget_ms": 5, "cost": "macs"}, "leave cost"),
        ({"latency_provider": "tpu"}, "latency_provider"),
        ({"latency_batch": 0}, "latency_batch"),
    ],
)
def test_bad_latency_options(options, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig().with_options(**options)


def test_cli_rejects_a_budget_below_the_fastest_model(tiny_export, tmp_path):
    proc = run_cli(
        "search",
        str(tiny_export("legacy17")),
        "--data",
        "scenes",
        "--out",
        str(tmp_path / "run"),
        "--latency-budget-ms",
        "0.000001",
        "--no-progress",
        "--config",
        str(_config(tmp_path)),
    )
    assert_clean_error(proc, "latency_budget_ms=1e-06", "below the fastest model", "raise")


def _config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "batch_size: 4\nwarmup_steps: 1\nsearch_steps: 1\npost_train_steps: 1\n"
        f"latency_provider: cpu\nlatency_cache: {tmp_path / 'cache'}\n"
        f"data: {{count: 16, size: 32, cache_dir: {tmp_path / 'data'}}}\n"
    )
    return path


def test_cli_prints_the_table_and_the_budget_range(model, tmp_path):
    save_supermodel(model, tmp_path / "s.pt")
    args = ["latency", str(tmp_path / "s.pt"), "--provider", "cpu", "--cache", str(tmp_path)]
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert [r["unit"] for r in info["units"]] == model.unit_names
    p = info["predicted_ms"]
    assert p["fastest"] <= p["all-shared"] < p["all-specific"]
    assert set(info["measured_ms"]) == {"all-shared", "all-specific", "all-skip"}
    assert len(list(tmp_path.glob("*.json"))) == 1  # cached: the next search reads it
    text = run_cli(*args)
    assert text.returncode == 0 and "all-shared" in text.stdout and "skip ms" in text.stdout
    assert_clean_error(run_cli("latency", str(model.graph.source)), "give --tasks")


def test_penalty_starts_where_the_prediction_passes_the_budget(model, table):
    unit, skip = table.costs()
    full = float(full_cost(unit, len(TASKS), table.base_ms))  # the trainer's budget denominator
    for branch in (SHARED, SPECIFIC):
        choices = model.choices_of(model.uniform_policy(branch))
        predicted = table.predict(choices)
        for budget, penalised in ((predicted * 1.01, False), (predicted * 0.99, True)):
            cost = cost_regularizer(
                _one_hot(choices), unit, skip, budget / full, table.ancestor_matrix, table.base_ms
            )
            assert (float(cost) > 0) == penalised


def test_fitting_a_policy_to_a_budget(model, table):
    """From the all-specific policy, whole units are given one branch until the prediction
    is within the budget; a policy already within it is left alone."""
    specific = model.choices_of(model.uniform_policy(SPECIFIC))
    shared_ms = table.predict(model.choices_of(model.uniform_policy(SHARED)))
    logits = model.masked_logits().detach()
    fitted, changed = fit_to_budget(table, specific, logits, shared_ms + 1e-9)
    assert table.predict(fitted) <= shared_ms + 1e-9 and changed > 0
    for u in range(len(model.units)):
        column = {row[u] for row in fitted}
        assert column == {SPECIFIC} or len(column) == 1, "changed units are unified"
    same, none = fit_to_budget(table, specific, logits, table.predict(specific) + 1)
    assert same == specific and none == 0


def test_the_cost_sees_the_argmax_policy_with_softmax_gradients():
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]]], requires_grad=True)
    current = current_policy(logits)
    want = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    assert torch.allclose(current.detach(), want, atol=1e-6)
    (current * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_rejoining_a_branch_off_has_a_gradient():
    """Three units in a chain, two tasks; task 1 alone skips unit 0, so unit 1 and 2 run twice.
    The runs fall if task 1 takes unit 0's shared branch again, and the gradient says so
    (a product of ancestors that is 0 still has the exact derivative)."""
    logits = torch.tensor(
        [[[2.0, 0.0, 0.0]] * 3, [[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]],
        dtype=torch.float64,
        requires_grad=True,
    )
    anc = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]], dtype=torch.float64)
    runs = expected_runs(current_policy(logits), anc)
    assert runs[:, SHARED].tolist() == pytest.approx([1.0, 2.0, 2.0])
    runs[:, SHARED].sum().backward()
    grad = logits.grad[1, 0]
    assert float(grad[SHARED]) < 0 < float(grad[SKIP])
