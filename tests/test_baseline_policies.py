"""The hand-made policies every search is judged against: last-k, random, random matched in
size to a searched policy."""

from __future__ import annotations

import pytest

import onnxmtl
from onnxmtl.compiler import (
    SHARED,
    SKIP,
    SPECIFIC,
    baseline_policy,
    compile,
    is_policy_baseline,
    matched_random_policy,
    unshared_pairs,
)
from onnxmtl.errors import ConfigError
from onnxmtl.pipeline.end_to_end import DEFAULT_BASELINES, expand_baselines
from onnxmtl.tasks import Task

TASKS = [Task("seg", "segmentation", 3), Task("depth", "depth")]


@pytest.fixture(scope="module", params=["grouped", "none"])
def model(request, tiny_export):
    return compile(onnxmtl.load(tiny_export("legacy17")), TASKS, skip_projection=request.param)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("how", ["own", "skip"])
def test_last_k_leaves_exactly_the_last_k_units_unshared(model, k, how):
    policy = baseline_policy(model, f"{how}-last-{k}", seed=0)
    units = len(model.unit_names)
    skips = model.branch_mask[:, SKIP].tolist()
    for row in policy.choices:
        assert row[: units - k] == [SHARED] * (units - k)
        for u in range(units - k, units):
            # 'skip' skips where the unit has a skip and owns it where it has none
            assert row[u] == (SKIP if how == "skip" and skips[u] else SPECIFIC)
    assert policy.method == f"{how}-last-{k}" and unshared_pairs(policy) == k * len(TASKS)
    model.choices_of(policy)  # every choice is one the supermodel offers


def test_last_k_is_refused_beyond_the_backbone(model):
    with pytest.raises(ConfigError, match="k=99, but the backbone has"):
        baseline_policy(model, "own-last-99", seed=0)
    with pytest.raises(ConfigError, match="no baseline policy 'first-2'"):
        baseline_policy(model, "first-2", seed=0)
    assert is_policy_baseline("skip-last-7") and not is_policy_baseline("single-task")


@pytest.mark.parametrize("pairs", [0, 1, 5])
def test_a_matched_random_policy_has_the_searched_policys_size(model, pairs):
    policy = matched_random_policy(model, pairs, seed=3)
    assert unshared_pairs(policy) == pairs
    model.choices_of(policy)
    assert policy == matched_random_policy(model, pairs, seed=3)  # seeded
    others = {str(matched_random_policy(model, pairs, seed=s).choices) for s in range(8)}
    assert pairs == 0 or len(others) > 1  # and random
    with pytest.raises(ConfigError, match="unshared pair"):
        matched_random_policy(model, 10_000, seed=0)


def test_run_baselines_expand_last_k_and_refuse_unknown_names():
    assert expand_baselines(("all-shared", "last-k", "own-last-1")) == (
        "all-shared",
        "own-last-1",
        "own-last-2",
        "own-last-3",
        "skip-last-1",
        "skip-last-2",
        "skip-last-3",
    )
    assert set(expand_baselines(("last-k",))) < set(DEFAULT_BASELINES)
    with pytest.raises(ConfigError, match="got own-last-9"):
        expand_baselines(("own-last-9",))
