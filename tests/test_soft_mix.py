"""Soft mode mixing the branches' parameters (`soft_mix: parameters`) against mixing their
outputs, on TinyNet exports: equal at every one-hot sample, equal anywhere for units linear in
their parameters, each unit's operators run once per task, gradients to every branch and
logit."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import onnxmtl
from onnxmtl.compiler import SHARED, SKIP, SPECIFIC, Projection, compile
from onnxmtl.compiler.mixing import mixed_parameters
from onnxmtl.errors import ConfigError
from onnxmtl.tasks import Task, loss_fn

# Relative to the output scale: float32 through a dozen layers, the same function computed
# in a different order.
TOLERANCE = 1e-5


def tasks() -> list[Task]:
    return [Task("seg", "segmentation", 5, head="conv"), Task("depth", "depth")]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max()) / max(float(b.detach().abs().max()), 1e-6)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _trained_apart(path) -> onnxmtl.compiler.SuperModel:
    """A supermodel in training mode whose task copies and skips differ from the shared
    branch, as after a warm-up."""
    model = compile(onnxmtl.load(path), tasks()).train()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "policy_logits":
                p.add_(0.1 * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("folded", [False, True], ids=["bn", "folded-renorm"])
def test_parameter_mixing_equals_output_mixing_at_every_one_hot_sample(tiny_export, x, folded):
    model = _trained_apart(tiny_export("legacy17", fold_bn=folded))
    mask = model.branch_mask.expand(len(model.tasks), -1, -1)
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        choice = torch.randint(0, 3, mask.shape[:2], generator=gen)
        choice = torch.where(mask.gather(-1, choice.unsqueeze(-1)).squeeze(-1), choice, SHARED)
        with torch.no_grad():  # Gumbel noise cannot move a sample off a logit 10^4 ahead
            model.policy_logits.copy_(1e4 * nn.functional.one_hot(choice, 3))
        expected = model.features(x, mode="fixed", policy=choice)
        for mix in ("outputs", "parameters"):
            model.soft_mix = mix
            got = model.features(x, mode="soft", tau=1.0)
            for t, ((a,), (b,)) in enumerate(zip(got, expected)):
                assert relative(a, b) <= TOLERANCE, f"{mix}, task {t}"


def test_parameter_mixing_equals_output_mixing_for_units_linear_in_their_parameters(
    tiny_export,
):
    model = _trained_apart(tiny_export("legacy17"))
    linear = [
        u
        for u, unit in enumerate(model.graph.units)
        if unit.norm is None and unit.op_type == "Conv"
    ]
    assert linear, "TinyNet's squeeze-excite convolutions have no normalisation"
    gen = torch.Generator().manual_seed(4)
    for u in linear:
        branches = model.unit_branches(u)
        shape = model.graph.units[u].in_shape
        x = torch.randn(4, *shape[1:], generator=gen)
        p_shared, p_own, _ = torch.softmax(torch.randn(3, generator=gen), 0).unbind()
        own = branches.specific[0]
        shared = dict(branches.shared.named_parameters())
        params = mixed_parameters(shared, dict(own.named_parameters()), (p_shared, p_own))
        expected = p_shared * branches.shared(x, [0]) + p_own * own(x)
        assert relative(functional_call(own, params, (x,)), expected) <= TOLERANCE


def _count_runs(model) -> dict[tuple[int, str], int]:
    """How often each unit's branches run (a task's own copy counted under 'own')."""
    runs: dict[tuple[int, str], int] = {}

    def count(key):
        return lambda *_: runs.__setitem__(key, runs.get(key, 0) + 1)

    for u, branches in enumerate(model.units):
        branches.shared.register_forward_hook(count((u, "shared")))
        if branches.skip is not None:
            branches.skip.register_forward_hook(count((u, "skip")))
        for own in branches.specific:
            own.register_forward_hook(count((u, "own")))
    return runs


def test_parameter_mixing_runs_each_unit_once_per_task(tiny_export, x, monkeypatch):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks()).train()
    convolutions = [0]
    conv2d = torch.nn.functional.conv2d

    def counted(*args, **kwargs):
        convolutions[0] += 1
        return conv2d(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", counted)
    own = [[SPECIFIC] * len(model.units) for _ in model.tasks]
    model(x, mode="fixed", policy=own)
    every_task_its_own = convolutions[0]
    model.soft_mix = "parameters"
    runs = _count_runs(model)
    convolutions[0] = 0
    model(x, mode="soft")
    for u in range(len(model.units)):
        assert (u, "shared") not in runs
        assert runs[(u, "own")] == len(model.tasks)
        if model.branch_mask[u, SKIP]:
            assert 1 <= runs[(u, "skip")] <= len(model.tasks), f"unit {u}: per distinct input"
    projections = sum(
        runs.get((u, "skip"), 0)
        for u in range(len(model.units))
        if isinstance(model.units[u].skip, Projection) and not model.units[u].skip.channels_last
    )
    assert convolutions[0] == every_task_its_own + projections
    model.soft_mix = "outputs"
    runs.clear()
    convolutions[0] = 0
    model(x, mode="soft")
    assert all(runs[(u, "shared")] >= 1 for u in range(len(model.units)))
    assert convolutions[0] > every_task_its_own + projections


def test_parameter_mixing_sends_gradients_to_every_branch_and_logit(tiny_export, x):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks()).train()
    model.soft_mix = "parameters"
    out = model(x, mode="soft")
    targets = {
        "seg": torch.randint(0, 5, (4, 32, 32), generator=torch.Generator().manual_seed(0)),
        "depth": torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) + 0.5,
    }
    sum(loss_fn(t)(out[t.name], targets[t.name]) for t in model.tasks).backward()
    for i, b in enumerate(model.units):
        modules = [("shared", b.shared), ("skip", b.skip), *enumerate(b.specific)]
        for name, module in modules:
            for p in module.parameters() if module is not None else ():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"unit {i} {name}"
    grad = model.policy_logits.grad
    mask = model.branch_mask.expand_as(grad)
    assert (grad[mask] != 0).all() and (grad[~mask] == 0).all()


def test_in_eval_mode_soft_mode_mixes_outputs(tiny_export, x):
    model = _trained_apart(tiny_export("legacy17")).eval()
    outputs = []
    for mix in ("outputs", "parameters"):
        model.soft_mix = mix
        torch.manual_seed(5)
        with torch.no_grad():
            outputs.append(model.features(x, mode="soft"))
    for (a,), (b,) in zip(*outputs):
        assert torch.equal(a, b)


def test_an_unknown_soft_mix_is_refused(tiny_export):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    with pytest.raises(ConfigError, match="soft_mix 'weights'; expected one of outputs, param"):
        model.soft_mix = "weights"
    assert model.soft_mix == "parameters"
