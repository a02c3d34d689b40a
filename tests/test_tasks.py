"""Tasks: YAML specs, default losses and standard metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from onnxmtl.errors import ConfigError
from onnxmtl.tasks import HEADS, Task, load_tasks, loss_fn, make_head, make_metric, register_head


def test_yaml_tasks_with_defaults(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(
        "tasks:\n"
        "  - {name: seg, kind: semantic_segmentation, num_outputs: 13, head: conv}\n"
        "  - {name: depth, kind: depth, weight: 2}\n"
        "  - {name: normal, kind: normals}\n"
    )
    seg, depth, normal = load_tasks(path)
    assert (seg.kind, seg.num_outputs, seg.head, seg.ignore_index) == (
        "segmentation",
        13,
        "conv",
        255,
    )
    assert (depth.num_outputs, depth.weight) == (1, 2.0)
    assert normal.num_outputs == 3 and normal.dense


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tasks: [{name: a, kind: foo, num_outputs: 2}]", "unknown kind 'foo'"),
        ("tasks: [{name: a, kind: classification}]", "needs num_outputs"),
        ("tasks: [{name: a, kind: depth, num_outputs: 2}]", "predicts 1 channel"),
        ("tasks: [{name: a, kind: depth}, {name: a, kind: depth}]", "repeated: a"),
        ("tasks: [{name: a, kind: depth, colour: red}]", "unknown key(s) colour"),
        ("tasks: [{name: 1a, kind: depth}]", "not a valid identifier"),
        ("tasks: [{name: class, kind: classification, num_outputs: 3}]", "Python keyword"),
        ("tasks: []", "non-empty list"),
        ("tasks: [unclosed", "not valid YAML"),
        ("tasks: [{kind: depth}]", "missing 'name'"),
    ],
    ids=[
        "kind",
        "num-outputs",
        "fixed-outputs",
        "duplicate",
        "key",
        "name",
        "keyword",
        "empty",
        "yaml",
        "no-name",
    ],
)
def test_bad_task_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_tasks(path)


def test_segmentation_metric_excludes_only_classes_absent_everywhere():
    task = Task("seg", "segmentation", 4, ignore_index=255)
    metric = make_metric(task)
    target = torch.tensor([[0, 0, 1, 255]])
    labels = torch.tensor([[0, 1, 1, 2]])  # class 2 predicted only on an ignored pixel
    metric.update(torch.nn.functional.one_hot(labels, 4).permute(0, 2, 1).float(), target)
    # class 0: tp 1, fp 0, fn 1 -> 1/2; class 1: tp 1, fp 1 -> 1/2; classes 2 and 3 absent
    assert metric.compute() == pytest.approx({"miou": 0.5, "pixel_acc": 2 / 3})
    metric.update(
        torch.nn.functional.one_hot(torch.tensor([[0]]), 4).permute(0, 2, 1).float(),
        torch.tensor([[3]]),
    )
    # class 3 now in the ground truth without a true positive: IoU 0 counts
    cm_ious = [1 / 3, 1 / 2, 0.0]
    assert metric.compute()["miou"] == pytest.approx(sum(cm_ious) / 3)


def test_depth_metric_on_valid_pixels():
    metric = make_metric(Task("d", "depth"))
    target = torch.tensor([[[[1.0, 2.0, 0.0, 4.0]]]])
    pred = torch.tensor([[[[1.1, 3.0, 9.0, 2.0]]]])
    metric.update(pred, target)
    out = metric.compute()
    assert out["abs_err"] == pytest.approx((0.1 + 1.0 + 2.0) / 3)
    assert out["rel_err"] == pytest.approx((0.1 + 0.5 + 0.5) / 3)
    assert out["delta1"] == pytest.approx(1 / 3)  # ratios 1.1, 1.5, 2.0
    assert out["delta2"] == pytest.approx(2 / 3)  # 1.5625
    assert out["delta3"] == pytest.approx(2 / 3)  # 1.953


def test_normals_metric_angles():
    metric = make_metric(Task("n", "normals"))
    target = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 0]]).T.reshape(1, 3, 1, 4)
    s = math.sin(math.radians(20))
    c = math.cos(math.radians(20))
    pred = torch.tensor([[2.0, 0, 0], [1.0, 0, 0], [c, s, 0], [1, 1, 1]]).T.reshape(1, 3, 1, 4)
    metric.update(pred, target)
    out = metric.compute()
    assert out["mean_angle"] == pytest.approx((0 + 90 + 20) / 3, abs=1e-6)
    assert out["median_angle"] == pytest.approx(20, abs=1e-3)
    assert out["within_11_25"] == pytest.approx(1 / 3)
    assert out["within_22_5"] == pytest.approx(2 / 3)
    assert out["within_30"] == pytest.approx(2 / 3)


def test_classification_top1_top5_and_regression():
    metric = make_metric(Task("c", "classification", 6))
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6]])
    metric.update(logits, torch.tensor([0, 0]))
    assert metric.compute() == pytest.approx({"accuracy": 0.5, "top5": 0.5})
    reg = make_metric(Task("r", "regression", 1))
    reg.update(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 3.0]))
    assert reg.compute() == pytest.approx({"mae": 0.5, "rmse": math.sqrt(0.5)})


def test_default_losses():
    depth = loss_fn(Task("d", "depth"))
    assert float(depth(torch.tensor([[[[2.0, 5.0]]]]), torch.tensor([[[1.0, 0.0]]]))) == 1.0
    normals = loss_fn(Task("n", "normals"))
    t = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    assert float(normals(3 * t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(normals(-t, t)) == pytest.approx(2.0)
    seg = loss_fn(Task("s", "segmentation", 2, ignore_index=7))
    logits = torch.tensor([[[[4.0, 0.0]], [[0.0, 0.0]]]])
    expected = torch.nn.functional.cross_entropy(logits[..., :1], torch.tensor([[[0]]]))
    assert float(seg(logits, torch.tensor([[[0, 7]]]))) == pytest.approx(float(expected))


def test_heads_map_features_to_outputs():
    x = torch.randn(2, 16, 5, 7)
    assert make_head(Task("s", "segmentation", 4), 16)(x).shape == (2, 4, 5, 7)
    assert make_head(Task("d", "depth", head="conv"), 16)(x).shape == (2, 1, 5, 7)
    assert make_head(Task("c", "classification", 3), 16)(x).shape == (2, 3)
    with pytest.raises(ConfigError, match="unknown head 'mlp'"):
        make_head(Task("c", "classification", 3, head="mlp"), 16)


def test_heads_from_a_name_a_factory_or_a_module_are_fresh_modules():
    """A registered name and a factory build a new module per call (with the task and the
    feature channels); a module is deep-copied, never handed out itself."""
    seen = []

    def factory(task: Task, in_channels: int) -> torch.nn.Module:
        seen.append((task.name, in_channels))
        return torch.nn.Conv2d(in_channels, task.num_outputs, 3, padding=1)

    register_head("test_conv3x3", factory)
    try:
        task = Task("d", "depth", head="test_conv3x3")
        first, second = make_head(task, 16), make_head(task, 16)
        assert seen == [("d", 16), ("d", 16)] and first is not second
        assert first(torch.randn(2, 16, 5, 7)).shape == (2, 1, 5, 7)
    finally:
        del HEADS["test_conv3x3"]
    assert make_head(Task("c", "classification", 3, head=factory), 8).in_channels == 8
    given = torch.nn.Linear(8, 3)
    copy = make_head(Task("c", "classification", 3, head=given), 8)
    assert copy is not given and copy.weight.data_ptr() != given.weight.data_ptr()
    assert torch.equal(copy.weight, given.weight)


def test_bad_heads_are_refused_in_one_line():
    with pytest.raises(ConfigError) as info:
        make_head(Task("c", "classification", 3, head="mlp"), 16)
    message = str(info.value)
    assert "\n" not in message
    assert "expected one of aspp, conv, conv1x1, linear" in message
    with pytest.raises(ConfigError, match="returned int, not an nn.Module"):
        make_head(Task("c", "classification", 3, head=lambda task, channels: 3), 16)
    with pytest.raises(ConfigError, match="neither a head name"):
        make_head(Task("c", "classification", 3, head=3), 16)


@pytest.mark.parametrize("kind", ["classification", "multilabel", "regression"])
def test_unlabelled_samples_are_skipped_by_losses_and_metrics(kind):
    """Partial labels: an unlabelled sample (the ignore value for classes, a row of NaN for
    values) adds nothing to the loss or the metrics; a batch with none labelled gives a loss
    of 0 whose gradient is 0, never NaN."""
    task = Task("t", kind, 4)
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 4, generator=gen, requires_grad=True)
    if kind == "classification":
        target = torch.tensor([0, 255, 3, 1, 255, 2])
        missing = torch.tensor([255] * 6)
    else:
        target = torch.rand(6, 4, generator=gen)
        if kind == "multilabel":
            target = target.round()
        target[[1, 4]] = float("nan")
        missing = torch.full((6, 4), float("nan"))
    keep = torch.tensor([True, False, True, True, False, True])
    loss = loss_fn(task)
    assert torch.allclose(loss(pred, target), loss(pred[keep], target[keep]))
    empty = loss(pred, missing)
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))
    metric, reference = make_metric(task), make_metric(task)
    metric.update(pred, target)
    reference.update(pred[keep], target[keep])
    assert metric.compute() == reference.compute()
