"""Dense heads that read an early, high-resolution map beside the last one (`deeplab`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxmtl
from onnxmtl.compiler import compile, load_supermodel, save_supermodel
from onnxmtl.compiler.policy import SHARED
from onnxmtl.errors import ConfigError, FeatureError
from onnxmtl.ir.multiscale import with_early_feature
from onnxmtl.runtime import session
from onnxmtl.tasks import HEADS, DeepLabHead, Task, make_head, register_head
from tests.helpers import (
    assert_close,
    assert_gradients_reach_every_parameter,
    assert_random_policy_derives_and_exports,
)

SIZE = 64


@pytest.fixture(scope="module")
def mobilenet(corpus):
    """MobileNetV2 (torchvision, legacy exporter) at 64x64: its last map is 2x2."""
    return onnxmtl.load(corpus("mobilenet_v2", "legacy17"), input_shape=(1, 3, SIZE, SIZE))


def edge_tasks() -> list[Task]:
    return [Task("cls", "classification", 10), Task("edges", "segmentation", 2, head="deeplab")]


def test_the_early_map_is_the_last_one_at_a_quarter_of_the_input(mobilenet):
    """The compiler adds, first among the features, the last value every path runs through at
    1/4 of the input's height or finer (16 rows at 64): MobileNetV2's map before its first
    stride-8 convolution, not a Pad's bordered output; the graph it was given keeps its one
    feature value."""
    graph = with_early_feature(mobilenet)
    assert mobilenet.features == graph.features[1:] and len(graph.features) == 2
    early = graph.feature_shapes[0]
    assert early is not None and early[2:] == (16, 16)
    assert graph.feature_shapes[1][2:] == (2, 2)
    producers = {out.name: node.op_type for node in graph.nodes for out in node.outputs}
    assert producers[graph.features[0]] != "Pad"


def test_supermodel_early_map_matches_onnxruntime_and_derives(mobilenet, tmp_path):
    """All-shared, the supermodel's early map and last map equal onnxruntime's run of the same
    graph (within COMPILER_TOLERANCE); the head's output is at the image's size; a random
    policy's derived model computes what the supermodel does, and its export what the derived
    model does."""
    model = compile(mobilenet, edge_tasks()).eval()
    assert isinstance(model.heads["edges"], DeepLabHead)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        early, last = model.features(x, mode="fixed", policy=model.uniform_policy(SHARED))[0]
        out = model(x, mode="fixed", policy=model.uniform_policy(SHARED))
    expected = session(model.graph.to_proto(), ["CPUExecutionProvider"]).run(
        model.graph.features, {model.graph.input_name: x.numpy()}
    )
    assert_close(early, expected[0], "early map")
    assert_close(last, expected[1], "last map")
    assert out["edges"].shape == (2, 2, SIZE, SIZE) and out["cls"].shape == (2, 10)
    assert_random_policy_derives_and_exports(model, x, tmp_path, "deeplab")


def test_the_head_uses_the_early_map(mobilenet):
    """Changing only the early map changes the DeepLab head's output, and changing it at one
    place changes the output near that place most: the detail comes from the early map."""
    model = compile(mobilenet, edge_tasks()).eval()
    head = model.heads["edges"]
    gen = torch.Generator().manual_seed(0)
    early = torch.randn(1, head.early[0].in_channels, 16, 16, generator=gen)
    last = torch.randn(1, 1280, 2, 2, generator=gen)
    with torch.no_grad():
        base = head((early, last))
        moved = early.clone()
        moved[:, :, 3, 12] += 5.0
        change = (head((moved, last)) - base).abs().sum(1)[0]
    assert base.shape == (1, 2, 16, 16)
    row, col = np.unravel_index(int(change.argmax()), change.shape)
    assert abs(row - 3) <= 1 and abs(col - 12) <= 1
    assert float(change[12:, :6].max()) == 0.0  # beyond the 3x3 fuse's reach: unchanged
    # no parameter is left unused (the ASPP's classifier reads the fused map)
    assert_gradients_reach_every_parameter(
        head, (early.repeat(2, 1, 1, 1), last.repeat(2, 1, 1, 1))
    )


def test_saved_supermodel_keeps_the_early_map(mobilenet, tmp_path):
    """A saved supermodel with a DeepLab head loads with both feature values and computes the
    same outputs."""
    model = compile(mobilenet, edge_tasks()).eval()
    save_supermodel(model, tmp_path / "supermodel.pt")
    again = load_supermodel(tmp_path / "supermodel.pt").eval()
    assert again.graph.features == model.graph.features
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = model(x, mode="warmup"), again(x, mode="warmup")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_backbone_without_an_early_map_is_one_clear_error(tiny_export):
    """TinyNet's last map is at stride 2, so no earlier map is finer: compile refuses the head
    with a FeatureError naming the file and the two ways out."""
    graph = onnxmtl.load(tiny_export("legacy17"))
    with pytest.raises(FeatureError, match="no feature map of at least 8 rows.*--features EARLY"):
        compile(graph, edge_tasks())


def test_an_early_map_head_needs_two_channel_counts_and_registers_like_any():
    """make_head with one channel count refuses an early-map head; one registered with
    early_map=True gets (early, last) channels from its factory and both maps."""
    with pytest.raises(ConfigError, match="reads an early feature map"):
        make_head(Task("e", "segmentation", 2, head="deeplab"), 16)
    seen: list[tuple[int, int]] = []

    def factory(task: Task, channels):
        seen.append(channels)
        return torch.nn.Conv2d(channels[0], task.outputs, 1)

    register_head("test_early_only", factory, early_map=True)
    try:
        head = make_head(Task("e", "segmentation", 2, head="test_early_only"), (8, 4, 32))
    finally:
        del HEADS["test_early_only"]
        from onnxmtl.tasks.heads import EARLY_MAP_HEADS

        EARLY_MAP_HEADS.discard("test_early_only")
    assert seen == [(8, 32)] and head.in_channels == 8
