"""Cost models by name: the registry refuses unknown names, a registered cost model is built
for the search and used by the trainer, and the trainer refuses a config whose cost it was
not given."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

import onnxmtl
from onnxmtl.compiler import SHARED, Policy, SuperModel, load_supermodel
from onnxmtl.cost import COSTS, CountedCost, make_cost, register_cost
from onnxmtl.data import Scenes
from onnxmtl.errors import ConfigError
from onnxmtl.training import CostModel, SearchConfig, Trainer

TINY = dict(batch_size=4, warmup_steps=2, search_steps=3, post_train_steps=1)
DATA = dict(count=16, size=32)


def _model(tiny_export) -> SuperModel:
    return onnxmtl.compile(onnxmtl.load(tiny_export("legacy17")), [onnxmtl.Task("a", "depth")])


def test_an_unknown_cost_is_refused_with_the_registered_names(tiny_export, tmp_path):
    with pytest.raises(ConfigError, match=r"cost='flops'; expected one of params, macs, latency"):
        make_cost(_model(tiny_export), SearchConfig().with_options(cost="flops"))
    with pytest.raises(ConfigError, match="register_cost"):  # before anything is read or written
        onnxmtl.search(tmp_path / "missing.onnx", "scenes", tmp_path / "run", config={"cost": "x"})
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="cost=3; expected a string"):
        SearchConfig().with_options(cost=3)
    assert make_cost(_model(tiny_export), SearchConfig()) is None


def test_built_in_costs_give_the_trainer_the_same_things(tiny_export):
    model = _model(tiny_export)
    units = len(model.units)
    for name in ("params", "macs"):
        cost: CostModel = make_cost(model, SearchConfig().with_options(cost=name, cost_budget=0.5))
        assert cost.unit.shape == cost.skip.shape == (units,) and (cost.unit > 0).all()
        assert cost.budget == 0.5 and cost.base == 0 and cost.logged is None
        policy = model.uniform_policy(SHARED)
        assert cost.fit(policy, model.masked_logits()) is policy
    assert make_cost(model, SearchConfig().with_options(cost="params")).ancestors is None
    assert make_cost(model, SearchConfig().with_options(cost="macs")).ancestors.shape == (
        units,
        units,
    )


@dataclass
class _AllShared:
    """A cost model of its own (not a subclass of the built-in ones): one per unit, and a
    derived policy that is always all-shared, reported in all-shared.json."""

    unit: torch.Tensor
    skip: torch.Tensor
    ancestors: torch.Tensor | None = None
    base: float = 1.0
    budget: float | None = None
    logged: str | None = "units"

    def fit(self, policy: Policy, logits: torch.Tensor) -> Policy:
        choices = [[SHARED] * len(row) for row in policy.choices]
        return replace(policy, choices=choices, method=f"{policy.method}+shared")

    def write_report(self, run_dir: Path, policy: Policy, searched: Policy) -> None:
        info = {"policy": policy.choices, "searched": searched.choices}
        (run_dir / "all-shared.json").write_text(json.dumps(info))


def _all_shared(model: SuperModel, config: SearchConfig, progress: bool) -> _AllShared:
    n = len(model.units)
    return _AllShared(torch.ones(n), torch.zeros(n), budget=config.cost.budget)


def test_a_registered_cost_model_is_built_for_the_search_and_used(tiny_export, tmp_path):
    register_cost("all-shared", _all_shared)
    try:
        data = {**DATA, "cache_dir": str(tmp_path / "data")}
        config = {**TINY, "cost": "all-shared", "cost_budget": 0.5, "data": data}
        config["derive"] = "argmax"  # the budget's fit of the argmax policy is under test
        result = onnxmtl.search(
            tiny_export("legacy17"), "scenes", tmp_path / "run", config=config, progress=False
        )
    finally:
        COSTS.pop("all-shared")
    assert result.policy.method == "argmax+shared"
    assert all(b == SHARED for row in result.policy.choices for b in row)
    report = json.loads((tmp_path / "run" / "all-shared.json").read_text())
    assert report["policy"] == result.policy.choices
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in rows if r["phase"] == "search"]
    units = len(load_supermodel(tmp_path / "run" / "supermodel.pt").units)
    full = 1.0 + 3 * units  # the base, and one per unit for each of the three tasks
    assert search
    for r in search:  # the logged cost is the excess of the expected share over the budget
        assert r["cost"] == pytest.approx(max(0.0, r["units"] / full - 0.5), abs=1e-6)


def test_the_trainer_refuses_a_cost_it_was_not_given(tiny_export, tmp_path):
    train = Scenes("train", cache_dir=tmp_path / "data", **DATA)
    model = onnxmtl.compile(onnxmtl.load(tiny_export("legacy17")), train.tasks())
    config = SearchConfig().with_options(**TINY, cost="macs")
    with pytest.raises(ConfigError, match="cost='macs', but the trainer was given no cost model"):
        Trainer(model, train, config, tmp_path / "run", progress=False)
    counted = CountedCost(torch.ones(len(model.units)), torch.zeros(len(model.units)), None)
    with pytest.raises(ConfigError, match="cost=None, but the trainer was given a cost model"):
        Trainer(
            model,
            train,
            SearchConfig().with_options(**TINY),
            tmp_path / "run",
            progress=False,
            cost=counted,
        )
    baseline = SearchConfig().with_options(
        **TINY, cost="latency"
    )  # a fixed policy needs no cost model
    fixed = model.uniform_policy(SHARED)
    Trainer(model, train, baseline, tmp_path / "b", progress=False, fixed_policy=fixed)
