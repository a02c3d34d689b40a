"""Precise BatchNorm: statistics re-estimated with the final weights, as the trainer's last step."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import onnxmtl
from onnxmtl.compiler import SHARED, SKIP, Policy
from onnxmtl.data import Scenes
from onnxmtl.training import SearchConfig, Trainer, recompute_batchnorm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4)
    )


def test_statistics_are_the_plain_average_over_the_batches():
    net, unused = _net(), nn.BatchNorm2d(4)
    net.add_module("unused", unused)
    unused.running_mean.fill_(3.0)
    batches = [torch.randn(8, 3, 6, 6) * (i + 1) + i for i in range(4)]
    it = iter(batches)
    net.train()
    done = recompute_batchnorm(net, lambda: net[:5](next(it)), len(batches))
    assert done == ["2", "4"] and net.training and net[2].momentum == 0.1
    with torch.no_grad():
        inputs = [net[0](b) for b in batches]  # dropout was off: eval mode around the norms
        mean = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
        var = torch.stack([x.var((0, 2, 3)) for x in inputs]).mean(0)
    torch.testing.assert_close(net[2].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[2].running_var, var, rtol=1e-5, atol=1e-6)
    assert torch.equal(unused.running_mean, torch.full((4,), 3.0))


def test_a_failing_forward_leaves_the_statistics_alone():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calls = iter([torch.randn(2, 3, 6, 6)])
    with pytest.raises(StopIteration):
        recompute_batchnorm(net, lambda: net(next(calls)), 3)
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert net[2].momentum == 0.1


def test_the_trainer_ends_with_precise_statistics(tiny_export, tmp_path_factory, tmp_path):
    """A post-trained policy that skips units: with the recomputation, eval-mode outputs on
    training images match train-mode (batch-statistics) outputs far better than with the
    running averages of training."""
    cache = tmp_path_factory.mktemp("scenes")
    train = Scenes("train", count=64, size=32, cache_dir=cache)
    path = tiny_export("legacy17", fold_bn=True)

    def run(batches: int):
        model = onnxmtl.compile(onnxmtl.load(path), train.tasks())
        skips = [u for u in range(len(model.units)) if model.branch_mask[u, SKIP]]
        row = [SKIP if u in skips[:2] else SHARED for u in range(len(model.units))]
        policy = Policy(model.task_names, model.unit_names, [list(row) for _ in model.tasks])
        config = SearchConfig().with_options(
            batch_size=16, post_train_steps=6, post_train_lr=0.05, batchnorm_batches=batches
        )
        Trainer(
            model, train, config, tmp_path / str(batches), fixed_policy=policy, progress=False
        ).run()
        return model

    images = torch.stack([train[i][0] for i in range(48)])

    def gap(model) -> float:
        with torch.no_grad():
            model.eval()
            evals = model(images, mode="fixed")
            model.train()
            trains = model(images, mode="fixed")
        return max(float((evals[k] - trains[k]).abs().max()) for k in evals)

    kept, precise = run(0), run(32)
    assert gap(precise) < 0.2 * gap(kept)
    saved = json.loads((tmp_path / "32" / "metrics.json").read_text())
    assert set(saved) == {"val"}
