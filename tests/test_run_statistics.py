"""Normalisation statistics per run: a shared branch that runs once for each distinct input
keeps BatchNorm statistics per task, in the supermodel, in precise-BN re-estimation, in the
derived model and in its export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import onnxmtl
from onnxmtl.compiler import (
    SHARED,
    SPECIFIC,
    compile,
    load_supermodel,
    random_policy,
    save_supermodel,
)
from onnxmtl.compiler.branches import RunBatchNorm, per_run_statistics, run_for
from onnxmtl.compiler.io import VERSION
from onnxmtl.data import Scenes
from onnxmtl.derived import derive
from onnxmtl.exporter import export
from onnxmtl.runtime import session
from onnxmtl.tasks import Task
from onnxmtl.training import SearchConfig, Trainer, recompute_batchnorm


def _tasks() -> list[Task]:
    return [Task("a", "classification", 4), Task("b", "classification", 4)]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_each_row_follows_torch_batchnorm(momentum):
    """Rows named by a run follow torch's BatchNorm2d exactly (outputs and running
    statistics, exponential or cumulative); the other rows are left alone."""
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(5, momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2)
        reference.bias.uniform_(-1, 1)
    norm = per_run_statistics(nn.Sequential(reference), 3)[0]
    reference = nn.BatchNorm2d(5, momentum=momentum).train()
    reference.load_state_dict(
        {
            "weight": norm.weight.detach(),
            "bias": norm.bias.detach(),
            "running_mean": torch.zeros(5),
            "running_var": torch.ones(5),
            "num_batches_tracked": torch.tensor(0),
        }
    )
    assert isinstance(norm, RunBatchNorm) and norm.running_mean.shape == (3, 5)
    norm.train()
    for i in range(3):
        x = torch.randn(4, 5, 6, 6) * (i + 1) + i
        torch.testing.assert_close(run_for(norm, [0, 2])(x), reference(x), rtol=1e-5, atol=1e-5)
    for row in (0, 2):
        torch.testing.assert_close(norm.running_mean[row], reference.running_mean)
        torch.testing.assert_close(norm.running_var[row], reference.running_var)
        assert int(norm.num_batches_tracked[row]) == 3
    assert torch.equal(norm.running_mean[1], torch.zeros(5))
    assert torch.equal(norm.running_var[1], torch.ones(5))
    norm.eval(), reference.eval()
    x = torch.randn(2, 5, 6, 6)
    torch.testing.assert_close(run_for(norm, [2])(x), reference(x), rtol=1e-5, atol=1e-5)


def _parting_policy(model) -> list[list[int]]:
    """Task 'a' takes its own copy of the first unit and shares every later one, so every
    later shared unit runs twice per forward: once on a's value, once on b's."""
    choices = [[SHARED] * len(model.units) for _ in model.tasks]
    choices[0][0] = SPECIFIC
    return choices


def _parted_model(tiny_export):
    model = compile(onnxmtl.load(tiny_export("legacy17")), _tasks())
    with torch.no_grad():  # a's copy of the first unit computes something else
        for p in model.units[0].specific[0].parameters():
            p.mul_(3.0).add_(0.5)
    return model


def test_a_shared_unit_run_twice_normalises_each_run_with_its_own_statistics(tiny_export):
    """Statistics estimated on a batch (precise BN, one batch) make eval mode reproduce train
    mode on that batch for every task: each run of a shared BatchNorm has its own. With one
    set of statistics for both runs, eval mode normalises both with their mixture."""
    model = _parted_model(tiny_export)
    choices = _parting_policy(model)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.train()
    done = recompute_batchnorm(model, lambda: model(x, mode="fixed", policy=choices), 1)
    assert any(name.startswith("units.3.shared") for name in done)
    with torch.no_grad():
        trains = model(x, mode="fixed", policy=choices)
        model.eval()
        evals = model(x, mode="fixed", policy=choices)
    for name in model.task_names:
        scale = float(trains[name].abs().max())
        # train mode divides by the biased variance, the statistics keep the unbiased one
        assert float((evals[name] - trains[name]).abs().max()) < 1e-2 * scale, name
    norm = model.units[3].shared.ops[1]
    assert isinstance(norm, RunBatchNorm)
    assert not torch.allclose(norm.running_mean[0], norm.running_mean[1], atol=1e-3)


def test_precise_statistics_keep_the_rows_no_run_reached(tiny_export):
    """Re-estimating for a policy in which only task 'a' runs a shared unit fills a's row
    and leaves b's statistics as they were."""
    model = _parted_model(tiny_export)
    norm = model.units[3].shared.ops[1]
    with torch.no_grad():
        norm.running_mean.fill_(7.0)
    choices = _parting_policy(model)
    choices[1][3] = SPECIFIC
    x = torch.randn(4, 3, 32, 32)
    model.train()
    recompute_batchnorm(model, lambda: model(x, mode="fixed", policy=choices), 1)
    assert not torch.allclose(norm.running_mean[0], torch.full_like(norm.running_mean[0], 7.0))
    assert torch.equal(norm.running_mean[1], torch.full_like(norm.running_mean[0], 7.0))
    assert norm.num_batches_tracked.tolist() == [1, 0]


def test_the_derived_model_and_its_export_keep_each_runs_statistics(tiny_export, tmp_path):
    model = _parted_model(tiny_export)
    choices = _parting_policy(model)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.train()
    recompute_batchnorm(model, lambda: model(x, mode="fixed", policy=choices), 1)
    model.eval()
    derived = derive(model, choices).eval()
    with torch.no_grad():
        want, got = model(x, mode="fixed", policy=choices), derived(x)
    for name in model.task_names:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5)
    path = tmp_path / "parted.onnx"
    export(derived, path)
    outs = session(path).run(None, {"image": x.numpy()})
    for name, out in zip(model.task_names, outs):
        np.testing.assert_allclose(out, want[name].numpy(), rtol=1e-4, atol=1e-4)


def test_a_format_1_supermodel_gives_every_task_its_statistics(tiny_export, tmp_path):
    """Files saved before statistics were per task load: every task's row starts from the
    one set of statistics they kept."""
    model = compile(onnxmtl.load(tiny_export("legacy17")), _tasks())
    with torch.no_grad():
        model.units[2].shared.ops[1].running_mean.uniform_(-1, 1)
    save_supermodel(model, tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    assert state["version"] == VERSION == 2
    state["version"] = 1
    state["state_dict"] = {
        k: v[0]
        if ".shared." in k and "running_" in k or k.endswith("shared.ops.1.num_batches_tracked")
        else v
        for k, v in state["state_dict"].items()
    }
    torch.save(state, tmp_path / "old.pt")
    loaded = load_supermodel(tmp_path / "old.pt")
    mean = loaded.units[2].shared.ops[1].running_mean
    assert mean.shape == (2, model.units[2].shared.ops[1].num_features)
    torch.testing.assert_close(mean[1], model.units[2].shared.ops[1].running_mean[0])


def test_random_policies_score_alike_in_eval_and_train_mode(
    tmp_path_factory, tmp_path, tiny_export
):
    """A trained random policy (tasks part and share again at random) scores on training
    images in eval mode (running statistics) within 2 points of train mode (batch
    statistics)."""
    cache = tmp_path_factory.mktemp("scenes")
    train = Scenes("train", count=96, size=32, cache_dir=cache)
    path = tiny_export("legacy17")
    images = torch.stack([train[i][0] for i in range(64)])
    labels = torch.stack([train[i][1]["seg"] for i in range(64)])
    model = compile(onnxmtl.load(path), train.tasks())
    policy = random_policy(model, 0)
    config = SearchConfig().with_options(
        seed=0, batch_size=32, post_train_steps=20, post_train_lr=0.01, batchnorm_batches=4
    )
    Trainer(model, train, config, tmp_path, fixed_policy=policy, progress=False).run()
    with torch.no_grad():
        accuracy = {}
        for mode in ("eval", "train"):  # train mode moves the running statistics
            model.train(mode == "train")
            preds = torch.cat([model(images[i : i + 32], mode="fixed")["seg"] for i in (0, 32)])
            accuracy[mode] = float((preds.argmax(1) == labels).float().mean())
    majority = float(torch.bincount(labels.flatten()).max()) / labels.numel()
    assert accuracy["train"] > majority + 0.05, (accuracy, majority)
    assert abs(accuracy["eval"] - accuracy["train"]) <= 0.02, accuracy
