"""derive 'halving': the candidate options, their composition, and the selection that
measures them."""

from __future__ import annotations

import json

import pytest
import torch

import onnxmtl
from onnxmtl.compiler import SHARED, SKIP, SPECIFIC
from onnxmtl.compiler.candidates import SEARCHED, compose, cut_depths, task_options
from onnxmtl.data import Scenes
from onnxmtl.errors import ConfigError
from onnxmtl.tasks import Task
from onnxmtl.training import SearchConfig, Trainer
from onnxmtl.training.read_logits import policy_from_logits
from onnxmtl.training.selection import (
    Trial,
    _candidate_start,
    _finalists,
    _fitting_finalists,
    _steps,
    select_policy,
)


def _model(tiny_export, tasks, skips: str = "grouped"):
    return onnxmtl.compile(
        onnxmtl.load(tiny_export("legacy17", fold_bn=True)), tasks, skip_projection=skips
    )


def test_the_ladder_is_fine_near_the_output_and_coarse_deep():
    assert cut_depths(49) == [1, 2, 3, 5, 8, 12, 18, 27, 41]
    assert cut_depths(4) == [1, 2, 3]
    assert cut_depths(2) == [1]
    assert cut_depths(1) == []  # one unit stays shared


def test_each_option_gives_every_task_the_last_k_units_owned_or_skipped(tiny_export):
    model = _model(tiny_export, [Task("a", "depth"), Task("b", "depth")])
    units = len(model.unit_names)
    searched = model.uniform_policy(SHARED)
    searched.choices[1][0] = SPECIFIC
    options = task_options(model, searched)
    ladder = cut_depths(units)
    assert list(options) == [
        "all-shared",
        *(f"{how}-last-{k}" for k in ladder for how in ("own", "skip")),
        SEARCHED,
    ]
    for k in ladder:
        assert options[f"own-last-{k}"][0] == [SHARED] * (units - k) + [SPECIFIC] * k
        assert options[f"skip-last-{k}"][1] == [SHARED] * (units - k) + [SKIP] * k
    assert options[SEARCHED] == searched.choices


def test_without_skips_the_skip_options_that_equal_own_ones_are_left_out(tiny_export):
    model = _model(tiny_export, [Task("a", "depth"), Task("b", "depth")], skips="none")
    options = task_options(model)
    rows = [tuple(rows[0]) for rows in options.values()]
    assert len(rows) == len(set(rows))
    no_skip = [u for u in range(len(model.unit_names)) if not bool(model.branch_mask[u, SKIP])]
    assert no_skip  # TinyNet changes shape somewhere, so some unit has no identity skip
    for name, rows_ in options.items():
        assert all(rows_[0][u] != SKIP for u in no_skip), name


def test_a_candidate_gives_each_task_its_own_option(tiny_export):
    model = _model(tiny_export, [Task("a", "depth"), Task("b", "depth")])
    options = task_options(model)
    policy = compose(model, options, ["all-shared", "skip-last-2"])
    assert policy.choices == [options["all-shared"][0], options["skip-last-2"][1]]
    assert policy.method == "selected"
    with pytest.raises(ConfigError, match="picks 1 option"):
        compose(model, options, ["all-shared"])
    with pytest.raises(ConfigError, match="no option own-last-99"):
        compose(model, options, ["all-shared", "own-last-99"])


def _trial(picks, metrics):
    return Trial(tuple(picks), 1, metrics)


def test_the_finalists_combine_each_tasks_best_options_best_first(tiny_export):
    """Task a scores best under x, then y; task b under z, then y. With keep=2 the finalists
    are a's {x, y} times b's {z, y}, ordered by the mean of the tasks' own deltas against
    all-shared: (x, z) +15, (x, y) +12.5, (y, z) +10, (y, y) +7.5."""
    model = _model(tiny_export, [Task("a", "depth"), Task("b", "depth")])

    class Run:
        pass

    run = Run()
    run.model = model  # _finalists reads only the task names
    ref = {"a": {"rmse": 1.0}, "b": {"rmse": 1.0}}
    first = [
        _trial(["all-shared"] * 2, ref),
        _trial(["x"] * 2, {"a": {"rmse": 0.8}, "b": {"rmse": 1.2}}),  # a +20, b -20
        _trial(["y"] * 2, {"a": {"rmse": 0.9}, "b": {"rmse": 0.95}}),  # a +10, b +5
        _trial(["z"] * 2, {"a": {"rmse": 1.1}, "b": {"rmse": 0.9}}),  # a -10, b +10
    ]
    assert _finalists(run, first, ref, keep=2) == [("x", "z"), ("x", "y"), ("y", "z"), ("y", "y")]
    assert _finalists(run, first, ref, keep=1) == [("x", "z")]


def _searched_trainer(tiny_export, tmp_path, **options):
    train = Scenes("train", count=64, size=32, cache_dir=tmp_path / "data")
    config = SearchConfig().with_options(
        **{
            "batch_size": 4,
            "warmup_steps": 2,
            "search_steps": 2,
            "post_train_steps": 3,
            "post_train_init": "search",
            "derive": "halving",
            "select_steps": 1,
            "select_keep": 1,
            "select_batches": 2,
            "select_batchnorm_batches": 1,
            **options,
        }
    )
    model = _model(tiny_export, train.tasks())
    return Trainer(model, train, config, tmp_path / "run", progress=False)


def test_selection_measures_every_option_and_leaves_the_weights_as_they_were(tiny_export, tmp_path):
    trainer = _searched_trainer(tiny_export, tmp_path)
    trainer.run(stop_after=3)  # the warm-up and one of the two search steps
    assert trainer.phase is not None and trainer.phase.name == "search"
    run = trainer.session
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    streams = {k: s.state_dict() for k, s in run.streams.items()}
    searched = policy_from_logits(run.model, "argmax")
    policy, selection = select_policy(run, searched)
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {k: s.state_dict() for k, s in run.streams.items()} == streams
    options = task_options(run.model, searched)
    assert selection.options == list(options)
    assert [t.picks for t in selection.first] == [(n,) * len(run.tasks) for n in options]
    assert all(t.steps == 1 for t in selection.first)
    # keep=1: one finalist, each task's best option at the first rung, fine-tuned 3x longer
    assert len(selection.second) == 1 and selection.second[0].steps == 3
    assert selection.chosen == selection.second[0].picks
    assert policy.choices == compose(run.model, options, selection.chosen).choices


@pytest.mark.parametrize(
    ("init", "start"), [("backbone", "search"), ("search", "search"), ("search", "final")]
)
def test_candidates_from_the_search_start_with_copies_as_the_final_model_starts_them(
    tiny_export, tmp_path, init, start
):
    """select_start 'search': post-trained from the backbone, the final model's task copies
    start equal to the shared weights, and so do the candidates' (the search trained them
    apart); post-trained from the search's weights, the candidates keep those, as they do
    with select_start 'final'. The session's model is left as it was."""
    trainer = _searched_trainer(tiny_export, tmp_path, post_train_init=init, select_start=start)
    trainer.run(stop_after=3)  # in the search, before its finish
    model = trainer.session.model
    with torch.no_grad():  # the copies as a longer search leaves them: apart from the shared
        for unit in model.units:
            for own in unit.specific:
                for weight in own.parameters():
                    weight.add_(0.01 * torch.randn_like(weight))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = _candidate_start(trainer.session, {k: v.clone() for k, v in before.items()})
    searched = policy_from_logits(model, "argmax")
    select_policy(trainer.session, searched)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    moved = False
    for u, unit in enumerate(model.units):
        for name, _ in unit.shared.named_parameters():
            shared = start[f"units.{u}.shared.{name}"]
            assert torch.equal(shared, before[f"units.{u}.shared.{name}"])
            for t in range(len(unit.specific)):
                key = f"units.{u}.specific.{t}.{name}"
                moved |= not torch.equal(before[key], shared)
                assert torch.equal(start[key], shared if init == "backbone" else before[key])
    assert moved


def test_candidates_can_start_where_the_final_model_starts(tiny_export, tmp_path):
    """With select_start 'final' and post_train_init 'backbone' (the defaults) every
    candidate starts from the weights kept at the run's start (the backbone's and the heads'
    initial ones), as the final model's post-training does, whatever the search trained; the
    logits stay the searched ones."""
    trainer = _searched_trainer(tiny_export, tmp_path, post_train_init="backbone")
    trainer.run(stop_after=3)
    model = trainer.session.model
    initial = torch.load(tmp_path / "run" / "initial.pt", weights_only=True)
    start = _candidate_start(trainer.session, dict(model.state_dict()))
    assert set(start) == set(model.state_dict())
    moved = [
        k
        for k in initial
        if k != "policy_logits" and not torch.equal(initial[k], model.state_dict()[k])
    ]
    assert moved  # the warm-up and the search trained the weights away from the start
    assert all(torch.equal(start[k], initial[k]) for k in initial if k != "policy_logits")
    assert torch.equal(start["policy_logits"], model.policy_logits.detach())


def test_with_no_candidate_within_budget_the_searched_policy_stays(tiny_export, tmp_path):
    trainer = _searched_trainer(tiny_export, tmp_path)
    trainer.run(stop_after=3)  # in the search, before its finish
    searched = policy_from_logits(trainer.session.model, "argmax")
    policy, selection = select_policy(trainer.session, searched, lambda p: False)
    assert policy is searched and selection.second == []
    assert selection.chosen == (SEARCHED,) * len(trainer.session.tasks)


def test_a_search_with_derive_halving_records_what_it_measured(tiny_export, tmp_path):
    trainer = _searched_trainer(tiny_export, tmp_path)
    result = trainer.run()
    saved = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert result.policy.method == "selected"
    assert saved["chosen"] == saved["second"][0]["picks"]
    assert len(saved["first"]) == len(saved["options"])
    names = set(trainer.model.task_names)
    assert all(set(t["metrics"]) == names for t in saved["first"] + saved["second"])


def test_the_report_says_what_each_task_took_and_lists_the_finalists():
    from onnxmtl.pipeline.report import selection_section

    selection = {
        "options": ["all-shared", "skip-last-1", SEARCHED],
        "first": [],
        "second": [
            {"picks": ["skip-last-1", "all-shared"], "steps": 30, "delta_m": 4.5},
            {"picks": ["all-shared", "all-shared"], "steps": 30, "delta_m": 0.25},
        ],
        "chosen": ["skip-last-1", "all-shared"],
    }
    tasks = [{"name": "a", "kind": "depth"}, {"name": "b", "kind": "depth"}]
    text = selection_section({"tasks": tasks, "policy": {"selection": selection}})
    assert "measured 3 options for every task, then 2 combinations" in text
    assert "Chosen: a takes skip-last-1, b takes all-shared." in text
    assert "| skip-last-1 | all-shared | 30 | 4.5 |" in text
    assert "| all-shared | all-shared | 30 | 0.25 |" in text
    assert selection_section({"tasks": tasks, "policy": {"selection": None}}) == ""
    one = {**selection, "second": selection["second"][:1], "chosen": ["skip-last-1", "all-shared"]}
    text = selection_section({"tasks": tasks, "policy": {"selection": one}})
    assert "measured 3 options for every task, then 1 combination of the best" in text


def test_under_a_parameter_budget_only_candidates_within_it_are_measured(tiny_export, tmp_path):
    """cost: params with cost_budget 0.6 of the all-specific model: the second rung holds only
    combinations whose parameters the cost model puts within the budget, and the chosen
    policy is one of them."""
    from onnxmtl.compiler.policy_cost import cost_regularizer
    from onnxmtl.cost import make_cost

    train = Scenes("train", count=64, size=32, cache_dir=tmp_path / "data")
    config = SearchConfig().with_options(
        batch_size=4, warmup_steps=2, search_steps=2, post_train_steps=1, select_steps=1,
        select_keep=3, select_batches=2, select_batchnorm_batches=1, cost="params",
        cost_budget=0.6,
    )  # fmt: skip
    model = _model(tiny_export, train.tasks())
    cost = make_cost(model, config, progress=False)
    result = Trainer(model, train, config, tmp_path / "run", progress=False, cost=cost).run()
    saved = json.loads((tmp_path / "run" / "selection.json").read_text())
    options = task_options(model, None)

    def over(picks) -> float:
        rows = [options[p][t] if p != SEARCHED else None for t, p in enumerate(picks)]
        if None in rows:
            return 0.0  # the searched rows are checked through the chosen policy below
        onehot = torch.nn.functional.one_hot(torch.tensor(rows), 3).float()
        return float(cost_regularizer(onehot, cost.unit, cost.skip, 0.6, None, cost.base))

    assert saved["second"], "some combination fits 0.6 of the all-specific parameters"
    assert all(over(t["picks"]) <= 0 for t in saved["second"])
    onehot = torch.nn.functional.one_hot(torch.tensor(result.policy.choices), 3).float()
    assert float(cost_regularizer(onehot, cost.unit, cost.skip, 0.6, None, cost.base)) <= 0
    # every first-rung option was measured, within the budget or not
    assert len(saved["first"]) == len(saved["options"])


def test_a_candidate_never_trains_longer_than_the_final_model():
    from types import SimpleNamespace

    run = SimpleNamespace(config=SearchConfig().with_options(post_train_steps=4))
    assert _steps(run, 10) == 4 and _steps(run, 3) == 3


def test_under_a_budget_a_task_gives_up_its_best_option_before_the_measured_choice():
    """Each task's best first-rung option together do not fit: the task whose next best fits
    takes it (the best such combination by the tasks' mean delta), as many finalists as
    `keep` gives; nothing fits, no finalist."""
    from types import SimpleNamespace

    run = SimpleNamespace(model=SimpleNamespace(task_names=["a", "b"]))
    gains = {"all-shared": (0, 0), "x": (10, 2), "y": (5, 8), "z": (1, 4)}  # % over all-shared
    first = [
        Trial((name,) * 2, 1, {t: {"acc": 0.5 * (1 + g / 100)} for t, g in zip("ab", gain)})
        for name, gain in gains.items()
    ]
    reference = first[0].metrics
    assert _fitting_finalists(run, first, reference, 1, lambda p: True) == [("x", "y")]
    no_x_for_a = lambda p: p[0] != "x"  # noqa: E731
    assert _fitting_finalists(run, first, reference, 1, no_x_for_a) == [("y", "y")]
    assert _fitting_finalists(run, first, reference, 2, no_x_for_a) == [("y", "y"), ("y", "z")]
    assert _fitting_finalists(run, first, reference, 2, lambda p: True) == [
        ("x", "y"), ("x", "z"), ("y", "y"), ("y", "z"),
    ]  # fmt: skip
    assert _fitting_finalists(run, first, reference, 1, lambda p: False) == []
