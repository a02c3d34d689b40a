"""Search: schedule, regularisers, weighting, derivation, delta-m, configs, resume, end to end."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from onnxmtl.compiler import SHARED, SKIP, SPECIFIC, Policy
from onnxmtl.cost import make_cost
from onnxmtl.errors import ConfigError
from onnxmtl.tasks import Task
from onnxmtl.training import (
    DWA,
    SearchConfig,
    Trainer,
    Weighting,
    conflict_weights,
    cost_regularizer,
    depth_weights,
    expected_cost,
    make_weighting,
    policy_from_logits,
    policy_lr_at,
    register_weighting,
    sharing_regularizer,
    tau_at,
)
from onnxmtl.training.attribution import attribution_record, policy_gradients
from onnxmtl.training.weighting import WEIGHTINGS
from tests.helpers import TINY, tiny_model


@pytest.mark.parametrize("steps", [2, 150, 20000])
def test_tau_and_policy_lr_schedules_span_the_search_whatever_its_length(steps):
    c = SearchConfig().with_options(search_steps=steps, tau=5.0, tau_end=0.5)
    last = steps - 1
    assert tau_at(c.search, 0) == pytest.approx(5.0) and tau_at(c.search, last) == pytest.approx(
        0.5
    )
    taus = [tau_at(c.search, s) for s in range(0, steps, max(1, steps // 50))]
    assert all(a > b for a, b in zip(taus, taus[1:]))
    assert policy_lr_at(c.search, 0) == pytest.approx(c.search.policy_lr)
    assert policy_lr_at(c.search, last) == pytest.approx(0.0, abs=1e-12)
    twice = SearchConfig().with_options(
        search_steps=steps, search_update="alternate", policy_steps=2, tau_end=0.5
    )
    assert tau_at(twice.search, 2 * steps - 1) == pytest.approx(0.5)
    constant = SearchConfig().with_options(search_steps=steps, policy_lr_schedule="constant")
    search = constant.search
    assert policy_lr_at(search, last) == policy_lr_at(search, 0) == search.policy_lr


def test_sharing_regularizer_formula():
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]])  # 1 task, 3 units
    depths = torch.tensor([1.0, 2.0, 4.0])
    s = 6.0

    def sp(x):
        return math.log1p(math.exp(x))

    expected = 0.75 * (sp(s * -0.2) + sp(s * -0.3)) + 0.5 * (sp(s * 0.5) + sp(s * 0.2))
    weights = depth_weights(depths)
    assert weights.tolist() == [0.75, 0.5, 0.0]
    assert float(sharing_regularizer(probs, weights, s)) == pytest.approx(expected, rel=1e-6)


def test_conflict_weights_free_the_most_conflicting_unit_and_push_the_least_hardest():
    weights = conflict_weights([2, 0, 3, 1])  # unit 2 conflicts most, unit 1 least
    assert weights.tolist() == pytest.approx([1 / 3, 1.0, 0.0, 2 / 3])
    assert conflict_weights([0]).tolist() == [0.0]


def test_expected_cost_and_budget():
    unit, skip = torch.tensor([10.0, 20.0]), torch.tensor([1.0, 0.0])

    def uniform(branch):
        p = torch.zeros(3, 2, 3)
        p[..., branch] = 1
        return p

    assert float(expected_cost(uniform(SHARED), unit, skip)) == 30
    assert float(expected_cost(uniform(SPECIFIC), unit, skip)) == 90
    assert float(expected_cost(uniform(SKIP), unit, skip)) == 1
    assert float(cost_regularizer(uniform(SHARED), unit, skip)) == pytest.approx(1 / 3)
    assert float(cost_regularizer(uniform(SHARED), unit, skip, budget=0.5)) == 0
    assert float(cost_regularizer(uniform(SPECIFIC), unit, skip, budget=0.5)) > 0


def test_dwa_weights_follow_loss_ratios():
    dwa = DWA([Task("a", "depth"), Task("b", "depth")], temperature=2.0, window=1)
    for losses in ([1.0, 1.0], [0.5, 1.0]):
        dwa(torch.tensor(losses))
    ratio = torch.tensor([0.5, 1.0])
    assert dwa.weights() == pytest.approx((2 * torch.softmax(ratio / 2, 0)).tolist())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("warmup_stepz: 3", "unknown option(s) warmup_stepz"),
        ("search_mode: sharp", "search_mode='sharp'"),
        ("batch_size: 0", "batch_size must be an integer >= 1"),
        ("- 1", "expected a mapping"),
        ("cost_budget: 2", "cost_budget"),
        ("policy_lr_schedule: step", "policy_lr_schedule='step'; expected one of constant"),
        ("derive: conflict\nconflict_every: 0", "conflict_every between 1 and warmup_steps"),
        ("tau_end: 0", "tau_end must be > 0"),
        ("sharing_prior: conflict\nconflict_every: 0", "sharing_prior 'conflict' need"),
        ("post_train_lr_schedule: linear", "expected one of step, cosine"),
        ("soft_mix: weights", "soft_mix='weights'; expected one of outputs, parameters"),
    ],
    ids=[
        "unknown",
        "mode",
        "batch",
        "list",
        "budget",
        "lr",
        "conflict",
        "tau",
        "prior",
        "post",
        "mix",
    ],
)
def test_bad_configs_name_the_option(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchConfig.load(path)
    with pytest.raises(ConfigError, match="not found"):
        SearchConfig.load(tmp_path / "missing.yaml")


def test_the_policy_read_from_the_logits_respects_the_mask_and_the_seed(tiny_export):
    model = tiny_model(tiny_export, [Task("a", "depth"), Task("b", "depth")])
    with torch.no_grad():
        model.policy_logits.normal_()
        model.policy_logits[..., SKIP] += 100
    argmax = policy_from_logits(model, "argmax")
    no_skip = [u for u in range(len(model.units)) if not model.branch_mask[u, SKIP]]
    assert all(argmax.choices[t][u] != SKIP for t in range(2) for u in no_skip)
    a, b = policy_from_logits(model, "sample", seed=3), policy_from_logits(model, "sample", seed=3)
    assert a.choices == b.choices and a.seed == 3


def test_search_end_to_end_writes_the_run(tiny_export, scenes, tmp_path):
    train, test = scenes
    model = tiny_model(tiny_export, train.tasks())
    result = Trainer(
        model, train, SearchConfig().with_options(**TINY), tmp_path, test=test, progress=False
    ).run()
    assert isinstance(result.policy, Policy)
    assert Policy.from_json(tmp_path / "policy.json").choices == result.policy.choices
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"} and 0 <= metrics["test"]["seg"]["miou"] <= 1
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["warmup"] * 3 + ["search"] * 6 + ["post"] * 3
    taus = [r["tau"] for r in rows if r["phase"] == "search"]
    assert taus[0] == pytest.approx(5.0) and taus[-1] == pytest.approx(0.5)
    shares = [r["grad_task_share"] for r in rows if r["phase"] == "search"]
    assert all(0 < share < 1 for share in shares)


@pytest.mark.parametrize("stop", [2, 5, 10], ids=["warmup", "search", "post"])
def test_resume_continues_exactly(tiny_export, scenes, tmp_path, stop):
    train, _ = scenes
    # pinned threads: the fair share would follow the machine's load, and float sums taken
    # over another thread count round differently
    config = SearchConfig().with_options(**TINY, weighting="dwa", dwa_window=2, threads=1)
    whole = tiny_model(tiny_export, train.tasks())
    Trainer(whole, train, config, tmp_path / "a", progress=False).run()
    first = tiny_model(tiny_export, train.tasks())
    assert (
        Trainer(first, train, config, tmp_path / "b", progress=False).run(stop_after=stop) is None
    )
    resumed = tiny_model(tiny_export, train.tasks())
    Trainer(resumed, train, config, tmp_path / "b", progress=False).run(resume=True)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 12


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_export, scenes, tmp_path, monkeypatch):
    train, _ = scenes
    config = SearchConfig().with_options(
        **TINY,
        policy_lr_schedule="cosine",
        conflict_every=1,
        conflict_init=True,
        sharing_prior="conflict",
        post_train_lr_schedule="cosine",
        cost="params",
        threads=1,  # bit for bit: no fair share following the machine's load
    )
    whole = tiny_model(tiny_export, train.tasks())
    Trainer(
        whole, train, config, tmp_path / "a", progress=False, cost=make_cost(whole, config)
    ).run()

    calls = {"n": 0}
    original = Trainer._run_step

    def dies_at_step_8(self):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_run_step", dies_at_step_8)
    killed = tiny_model(tiny_export, train.tasks())
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            killed, train, config, tmp_path / "b", progress=False, cost=make_cost(killed, config)
        ).run()
    monkeypatch.setattr(Trainer, "_run_step", original)
    resumed = tiny_model(tiny_export, train.tasks())
    cost = make_cost(resumed, config)
    Trainer(resumed, train, config, tmp_path / "b", progress=False, cost=cost).run(resume=True)
    assert torch.equal(resumed.policy_logits, whole.policy_logits)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    a_rows = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    b_rows = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(r).items() if k != "time"} for r in a_rows]
    assert strip == [{k: v for k, v in json.loads(r).items() if k != "time"} for r in b_rows]
    assert {"grad_task", "grad_sharing", "grad_cost", "policy_lr"} <= set(strip[5])
    post = [row["lr"] for row in strip if row["phase"] == "post"]
    n = config.post_train.steps  # cosine: from post_train_lr down to 0 after the last step
    cosine = [config.post_train.lr * 0.5 * (1 + math.cos(math.pi * k / n)) for k in range(n)]
    assert post == pytest.approx(cosine, rel=1e-9)
    conflict = [json.loads((tmp_path / run / "conflict.json").read_text()) for run in "ab"]
    assert conflict[0] == conflict[1] and conflict[0]["measurements"] == 3


def test_cost_budget_uncertainty_soft_and_per_task_steps(tiny_export, scenes, tmp_path):
    train, _ = scenes
    config = SearchConfig().with_options(
        **TINY,
        search_update="alternate",
        per_task_steps=True,
        weighting="uncertainty",
        cost="macs",
        cost_weight=1.0,
        cost_budget=0.2,
        log_format="csv",
        derive="argmax",  # the selection's fine-tuning steps would count as the search's
    )
    model = tiny_model(tiny_export, train.tasks())
    trainer = Trainer(model, train, config, tmp_path, progress=False, cost=make_cost(model, config))
    steps: dict[str, int] = {}
    step = trainer.session.optimizer_step

    def counted(optimizer, params):
        phase = trainer.phase.name if trainer.phase is not None else "end"
        steps[phase] = steps.get(phase, 0) + 1
        step(optimizer, params)

    trainer.session.optimizer_step = counted
    trainer.run()
    tasks = len(train.tasks())
    # per search iteration: one weight step per task (AutoMTL's), then one policy step
    assert steps["search"] == config.search.steps * (tasks + 1)
    assert steps["warmup"] == config.warmup.steps  # elsewhere one step on the weighted sum
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "cost" in header and len(rows) == 1 + 12
    search_rows = [dict(zip(header, r.split(","))) for r in rows[1:]][3:9]
    costs = [float(r["cost"]) for r in search_rows]
    # the budget binds (no policy of this short search gets its expected MAC share to 0.2):
    # the regulariser logs the excess over it, a fraction of the full model's MACs
    assert all(0 < c < 0.8 for c in costs)
    assert trainer.weighting.log_var.abs().sum() > 0


def test_post_training_starts_from_the_backbone_weights(tiny_export, scenes, tmp_path):
    train, _ = scenes
    config = SearchConfig().with_options(**{**TINY, "post_train_steps": 0, "batchnorm_batches": 0})
    model = tiny_model(tiny_export, train.tasks())
    Trainer(model, train, config, tmp_path, progress=False).run()
    initial = torch.load(tmp_path / "initial.pt", weights_only=True)
    final = model.state_dict()
    assert not torch.equal(final["policy_logits"], initial["policy_logits"])
    assert all(torch.equal(final[k], v) for k, v in initial.items() if k != "policy_logits")
    kept = tiny_model(tiny_export, train.tasks())
    config = SearchConfig().with_options(
        **{**TINY, "post_train_steps": 0, "post_train_init": "search"}
    )
    Trainer(kept, train, config, tmp_path / "kept", progress=False).run()
    changed = [k for k, v in initial.items() if not torch.equal(kept.state_dict()[k], v)]
    assert len(changed) > 1


def test_post_training_matches_a_baseline_trained_with_the_same_policy(
    tiny_export, scenes, tmp_path
):
    train, _ = scenes
    config = SearchConfig().with_options(**TINY, threads=1)  # bit for bit: threads pinned
    searched = tiny_model(tiny_export, train.tasks())
    policy = Trainer(searched, train, config, tmp_path / "s", progress=False).run().policy
    baseline = tiny_model(tiny_export, train.tasks())
    Trainer(baseline, train, config, tmp_path / "b", fixed_policy=policy, progress=False).run()
    want = baseline.state_dict()
    for name, tensor in searched.state_dict().items():
        if name != "policy_logits":
            assert torch.equal(tensor, want[name]), name


def _policy_trainer(tiny_export, scenes, tmp_path, **options) -> Trainer:
    """A trainer on the tiny model, switched to the search phase."""
    train, _ = scenes
    config = SearchConfig().with_options(**{**TINY, **options})
    model = tiny_model(tiny_export, train.tasks())
    cost = make_cost(model, config)
    trainer = Trainer(model, train, config, tmp_path, progress=False, cost=cost)
    trainer.current = [p.name for p in trainer.phases].index("search")
    trainer.phase.begin()
    return trainer


def test_policy_gradient_parts_add_up_to_the_policy_loss_gradient(tiny_export, scenes, tmp_path):
    trainer = _policy_trainer(tiny_export, scenes, tmp_path, cost="params", sharing_weight=0.5)
    logits = trainer.model.policy_logits
    stream = trainer.session.streams["train2"].state_dict()
    torch.manual_seed(1)
    task_loss, terms, _ = trainer.phase.policy_terms(tau=2.0)
    parts = policy_gradients(task_loss, terms, logits)
    trainer.session.streams["train2"].load_state_dict(stream)
    torch.manual_seed(1)
    task_loss, terms, _ = trainer.phase.policy_terms(tau=2.0)
    (task_loss + sum(terms.values())).backward()
    assert set(parts) == {"task", "sharing", "cost"}
    assert all(part.norm() > 0 for part in parts.values())
    torch.testing.assert_close(sum(parts.values()), logits.grad, rtol=1e-5, atol=1e-7)
    record = attribution_record(parts)
    norms = [record[f"grad_{name}"] for name in parts]
    assert record["grad_task_share"] == pytest.approx(norms[0] / sum(norms))


def test_a_joint_step_trains_weights_and_policy_from_one_batch(tiny_export, scenes, tmp_path):
    trainer = _policy_trainer(
        tiny_export, scenes, tmp_path, search_update="joint", search_mode="soft", cost="params"
    )
    run, model = trainer.session, trainer.model
    start = copy.deepcopy(model.state_dict())
    streams = {name: run.streams[name].state_dict() for name in ("train", "train1", "train2")}
    torch.manual_seed(1)
    record = trainer.phase.step()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert run.streams["train"].offset == streams["train"]["offset"] + 4  # one batch of 4
    for name in ("train1", "train2"):  # the halves are not read
        assert run.streams[name].state_dict() == streams[name]
    assert not torch.equal(model.policy_logits.detach(), start["policy_logits"])
    assert any(not torch.equal(p.detach(), start[n]) for n, p in model.named_parameters())
    assert 0 < record["grad_task_share"] < 1 and record["policy_loss"] > record["loss"]

    # the same batch and Gumbel noise by hand: the weights' gradient is the weighted task
    # loss's, the logits' is that plus the regularisers'
    model.load_state_dict(start)
    model.zero_grad(set_to_none=True)
    run.streams["train"].load_state_dict(streams["train"])
    torch.manual_seed(1)
    images, targets = run.streams["train"].next()
    loss = run.weighting(run.task_losses(images, targets, "soft", tau_at(trainer.config.search, 0)))
    terms, _ = trainer.phase.regularizer_terms(float(loss), tau_at(trainer.config.search, 0))
    (loss + sum(terms.values())).backward()
    assert set(grads) == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(grads[name], param.grad, rtol=1e-5, atol=1e-7)


def test_a_parameter_mixed_search_runs_no_shared_branch(tiny_export, scenes, tmp_path):
    trainer = _policy_trainer(tiny_export, scenes, tmp_path, soft_mix="parameters")
    model = trainer.model
    shared_runs: list[int] = []
    for u, branches in enumerate(model.units):
        branches.shared.register_forward_hook(lambda *_, u=u: shared_runs.append(u))
    start = model.policy_logits.detach().clone()
    record = trainer.phase.step()
    assert model.soft_mix == "parameters" and shared_runs == []
    assert 0 < record["grad_task_share"] < 1
    assert not torch.equal(model.policy_logits.detach(), start)


def test_a_joint_search_takes_one_step_of_each_at_a_time():
    with pytest.raises(ConfigError, match="search_update='joint'.*weight_steps"):
        SearchConfig().with_options(search_update="joint", weight_steps=2)


def test_without_regularisers_the_tasks_give_the_whole_policy_gradient(
    tiny_export, scenes, tmp_path
):
    train, _ = scenes
    config = SearchConfig().with_options(**TINY, sharing_weight=0.0)
    Trainer(tiny_model(tiny_export, train.tasks()), train, config, tmp_path, progress=False).run()
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in rows if r["phase"] == "search"]
    assert all(r["grad_sharing"] == 0 and r["grad_task"] > 0 for r in search)
    assert all(r["grad_task_share"] == 1 and "grad_cost" not in r for r in search)


def test_weightings_come_from_a_registry():
    tasks = [Task("a", "classification", 3), Task("b", "depth")]
    with pytest.raises(ConfigError, match="weighting='first'"):
        make_weighting("first", tasks, 2.0, 20)

    class FirstOnly(Weighting):
        def forward(self, losses: torch.Tensor) -> torch.Tensor:
            return losses[0]

    register_weighting("first", lambda tasks, temperature, window: FirstOnly(tasks))
    try:
        assert SearchConfig().with_options(weighting="first").loss.weighting == "first"
        weighting = make_weighting("first", tasks, 2.0, 20)
        assert float(weighting(torch.tensor([2.0, 5.0]))) == 2.0
    finally:
        WEIGHTINGS.pop("first")
    with pytest.raises(ConfigError, match="weighting"):
        SearchConfig().with_options(weighting="first")
