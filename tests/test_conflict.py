"""The tasks' gradient conflict (RECON): the measurement, the prior and the 'conflict' policy."""

from __future__ import annotations

import json

import pytest
import torch

import onnxmtl
from onnxmtl.compiler import SHARED, SPECIFIC, Policy
from onnxmtl.data import Scenes
from onnxmtl.errors import ConfigError
from onnxmtl.tasks import Task
from onnxmtl.training import SearchConfig, Trainer
from onnxmtl.training.conflict import ConflictMeter, conflict_policy, init_from_conflict


def _model(tiny_export, tasks):
    return onnxmtl.compile(onnxmtl.load(tiny_export("legacy17", fold_bn=True)), tasks)


def _two_tasks(tiny_export):
    return _model(tiny_export, [Task("a", "depth"), Task("b", "depth")])


def _measure(model, opposite: bool) -> ConflictMeter:
    """Two measurements where task b's loss is task a's (or its negative) on a's output."""
    meter = ConflictMeter(model)
    for seed in (0, 1):
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        out = model(x, mode="warmup")["a"]
        loss = (out**2).mean()
        meter.measure(torch.stack([loss, -loss if opposite else loss]))
    return meter


def test_opposite_tasks_conflict_on_every_unit_and_identical_tasks_on_none(tiny_export):
    model = _two_tasks(tiny_export)
    opposite, same = _measure(model, opposite=True), _measure(model, opposite=False)
    assert opposite.measurements == same.measurements == 2
    assert opposite.scores().tolist() == [1.0] * len(model.units)
    assert same.scores().tolist() == [0.0] * len(model.units)
    assert opposite.mean_cosine().tolist() == pytest.approx([-1.0] * len(model.units))
    assert same.mean_cosine().tolist() == pytest.approx([1.0] * len(model.units))
    assert all(p.grad is None for p in model.parameters())  # training's gradients untouched


def test_the_cosine_score_ranks_units_by_how_far_apart_the_gradients_point(tiny_export):
    """'share' ranks by how often a pair conflicted, 'cosine' by the mean cosine: a unit that
    conflicted in every measurement but barely (cosine -0.05) comes first by share, and after
    one that conflicted half the time but strongly (mean -0.4) by cosine."""
    model = _two_tasks(tiny_export)
    n = len(model.units)
    conflicts, cosine = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    conflicts[0], cosine[0] = 2.0, -0.1  # two measurements: share 1.0, mean cosine -0.05
    conflicts[1], cosine[1] = 1.0, -0.8  # share 0.5, mean cosine -0.4
    cosine[2:] = 0.2
    state = {"conflicts": conflicts, "cosine": cosine, "measurements": 2}
    by_share, by_cosine = ConflictMeter(model), ConflictMeter(model, score="cosine")
    by_share.load_state_dict(state)
    by_cosine.load_state_dict(state)
    assert by_share.ranking()[:2] == [0, 1] and by_cosine.ranking()[:2] == [1, 0]
    assert by_share.unit_scores()[:2].tolist() == [1.0, 0.5]
    assert by_cosine.unit_scores()[:2].tolist() == pytest.approx([0.05, 0.4])
    with pytest.raises(ConfigError, match="conflict_score must be one of share, cosine"):
        ConflictMeter(model, score="dot")
    with pytest.raises(ConfigError, match="cosine"):
        SearchConfig().with_options(conflict_score="dot")


def test_the_conflict_policy_makes_the_k_most_conflicting_units_specific(tiny_export):
    model = _two_tasks(tiny_export)
    units = len(model.units)
    ranking = torch.randperm(units, generator=torch.Generator().manual_seed(0)).tolist()
    params = [sum(p.numel() for p in unit.shared.parameters()) for unit in model.units]
    for share in (0.3, 0.6, 0.9):
        policy = conflict_policy(model, ranking, share)
        specific = [u for u in range(units) if policy.choices[0][u] == SPECIFIC]
        k = len(specific)
        assert policy.choices[0] == policy.choices[1] and policy.method == "conflict"
        assert set(specific) == set(ranking[:k]) and 0 < k < units
        assert sum(params[u] for u in ranking[:k]) <= share * sum(params)
        assert sum(params[u] for u in ranking[: k + 1]) > share * sum(params)
    assert conflict_policy(model, ranking, 0.0).counts()["specific"] == 0


def test_init_from_conflict_sets_the_specific_logits_by_rank(tiny_export):
    model = _two_tasks(tiny_export)
    scores = torch.linspace(0.2, 0.6, len(model.units)).double()
    init_from_conflict(model, scores, strength=3.0)
    logits = model.policy_logits.detach()
    assert logits[:, 0, SPECIFIC].tolist() == [0.0, 0.0]
    assert logits[:, -1, SPECIFIC].tolist() == pytest.approx([3.0, 3.0])
    assert logits[..., SHARED].abs().sum() == 0


def test_a_search_with_derive_conflict_turns_the_top_ranked_units_specific(tiny_export, tmp_path):
    cache = tmp_path / "data"
    train = Scenes("train", count=48, size=32, cache_dir=cache)
    config = SearchConfig().with_options(
        batch_size=4,
        warmup_steps=4,
        search_steps=0,
        post_train_steps=1,
        conflict_every=2,
        derive="conflict",
        conflict_share=0.6,
    )
    model = _model(tiny_export, train.tasks())
    result = Trainer(model, train, config, tmp_path / "run", progress=False).run()
    info = json.loads((tmp_path / "run" / "conflict.json").read_text())
    assert info["measurements"] == 2 and info["units"] == model.unit_names
    assert all(0 <= s <= 1 for s in info["scores"])
    saved = Policy.from_json(tmp_path / "run" / "policy.json")
    assert saved.method == "conflict" and saved.choices == result.policy.choices
    specific = {model.unit_names[u] for u, b in enumerate(saved.choices[0]) if b == SPECIFIC}
    assert specific and specific == set(info["ranking"][: len(specific)])
