"""Real backbones from converters/, from every exporter: lowered == onnxruntime, gradients
flow, the compiled supermodel (three tasks) with an all-shared policy == onnxruntime, one
hard-mode training step on a batch of 2 gives finite losses and changes the weights, and a
model derived with a random policy == its supermodel and its ONNX export == PyTorch, both at
the backbone's declared size and at a smaller one: the same export where the graph follows
the size, else the file loaded at that size, or refused there in one line where the file
holds its declared size (attention biases, patch grids).

A small default subset runs in `make test`; the whole corpus is marked slow
(`pytest -m slow tests/test_corpus.py`). Exports are cached under .cache/corpus.
"""

from __future__ import annotations

import pytest
import torch

import onnxmtl
from onnxmtl.compiler import SHARED, compile
from onnxmtl.errors import OnnxMtlError
from onnxmtl.lower import lower
from onnxmtl.lower.verify import verify
from onnxmtl.tasks import loss_fn
from tests.conftest import converters
from tests.helpers import (
    assert_close,
    assert_gradients_reach_every_parameter,
    assert_random_policy_derives_and_exports,
    ort_features,
    tasks,
)

# Relative to the output scale; float32 through 50+ layers stays far below it.
TOLERANCE = 1e-4
# Exports whose derived model only reproduces PyTorch at the traced batch size (MobileViT-v2's
# dynamo export: the first diverging node is the Reshape in front of a GroupNorm; LeViT's and
# EfficientFormer's attention: torch's exporter fuses the Reshape back from a BatchNorm over
# batch*tokens with the attention's and keeps the traced batch, which export reports as a
# DynamicBatchError and `run` answers with a batch of 1; not solved).
STATIC_BATCH = {
    ("timm_mobilevitv2_050", "dynamo"),
    ("timm_levit_128s", converters.STATIC_BATCH),
    ("timm_levit_128s", "legacy17"),
    ("timm_efficientformer_l1", "legacy17"),
}
# Backbones whose loaded graph holds the size it was loaded at (Reshape targets or pads folded
# for it): one export runs at that size only, so the smaller size is checked by loading the
# file there (`load(input_shape=...)`) and running the whole check again.
LOADS_AT_SIZE = {
    "efficientnet_lite0": "its SAME paddings are fixed Pads computed for the size loaded at",
    "timm_edgenext_xx_small": "channel-attention Reshapes folded for the size loaded at",
    "timm_efficientvit_b0": "linear-attention Reshapes folded for the size loaded at",
    "timm_poolformer_s12": "GroupNorm, exported as InstanceNorm between Reshapes, folded",
    "shufflenet_v2_x1_0": "channel-shuffle Reshapes follow the map they shuffle",
}
# Files whose constants hold the declared grid, rewritten at the smaller size (`ir/grid.py`):
# checked there like LOADS_AT_SIZE (EdgeNeXt's and EfficientViT's batch-1 files are, by name).
GRID_REWRITTEN = {
    ("timm_efficientformerv2_s0", converters.STATIC_BATCH): "attention biases cropped, "
    "token-count Reshapes follow the grid",
    ("timm_efficientformerv2_s0", "legacy17"): "as above, targets joined to the dynamic batch",
    ("timm_efficientformer_l1", "legacy17"): "the last stage's attention biases cropped",
    ("timm_levit_128s", "legacy17"): "attention biases cropped, subsampling ones included",
    ("timm_levit_128s", converters.STATIC_BATCH): "attention biases cropped, as above",
    ("timm_mobilevitv2_050", "legacy17"): "unfolding targets joined to the dynamic batch",
    ("timm_mobilevit_xxs", converters.STATIC_BATCH): "unfolding targets follow the grid, the "
    "3x3 map resized to whole 2x2 patches and back, as timm does",
    ("timm_mobilevit_xxs", "legacy17"): "as above; the patch rows, a constant factor of the "
    "computed batch*channels*rows, follow the grid",
    ("timm_tiny_vit_5m_224", converters.STATIC_BATCH): "the 20x20 map padded to 7x7 windows, "
    "the 10x10 and 5x5 ones' biases cropped",
}
# Files that load at their declared size only: the grid is held where no constant rewrite
# reaches it. At the smaller size load refuses them in one line.
DECLARED_SIZE_ONLY = {
    ("timm_mobilevitv2_050", "legacy13"): "onnx infers no size through opset 13's Unsqueeze: "
    "the targets joined to the batch stay unknown",
    ("timm_mobilevitv2_050", "dynamo"): "onnx infers no size through the Squeeze that reads "
    "the batch, as above",
    ("timm_tiny_vit_5m_224", "legacy17"): "its window counts are computed from the map's side "
    "by floor division, with no Pad traced: 7x7 windows cannot tile the 20x20 map",
}
DEFAULT = [
    ("squeezenet1_1", "dynamo"),
    ("efficientnet_lite0", "legacy17"),
    ("timm_lcnet_050", converters.STATIC_BATCH),
    ("timm_levit_128s", converters.STATIC_BATCH),
]
ALL = [
    (name, exporter)
    for name, backbone in converters.BACKBONES.items()
    for exporter in backbone.exporters
    if (name, exporter) not in DEFAULT
]


def smaller_size(size: int) -> int:
    """A second input size, about 3/4 of the declared one, on the 32-pixel stride grid."""
    return max(32, size * 3 // 4 // 32 * 32)


def _targets(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Random targets shaped like the three test tasks' outputs (seeded)."""
    gen = torch.Generator().manual_seed(0)
    seg, depth = outputs["seg"], outputs["depth"]
    return {
        "seg": torch.randint(0, seg.shape[1], (seg.shape[0], *seg.shape[2:]), generator=gen),
        "depth": torch.rand(depth.shape, generator=gen) + 0.5,
        "cls": torch.randint(0, outputs["cls"].shape[1], (2,), generator=gen),
    }


def _hard_training_step(model, x: torch.Tensor, what: str) -> None:
    """One optimizer step on the losses of a policy sampled in hard mode: every loss finite,
    and every parameter the sampled branches gave a gradient (above rounding noise) moves."""
    model.train()
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    outputs = model(x, mode="hard", tau=1.0)
    targets = _targets(outputs)
    losses = {t.name: loss_fn(t)(outputs[t.name], targets[t.name]) for t in model.tasks}
    for task, loss in losses.items():
        assert torch.isfinite(loss), f"{what}: {task} loss {float(loss)}"
    optimizer.zero_grad()
    sum(losses.values()).backward()
    # Gradients far below Adam's epsilon (1e-8) are float rounding noise (an attention
    # temperature behind a normalisation gets ~1e-14) and move nothing visibly.
    stepped = [
        n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().max() > 1e-8
    ]
    optimizer.step()
    assert stepped, f"{what}: no parameter got a gradient"
    after = dict(model.named_parameters())
    unchanged = [n for n in stepped if torch.equal(before[n], after[n])]
    assert not unchanged, f"{what}: the step left {unchanged[:3]} unchanged"
    model.eval()


def _check_at(path, name: str, exporter: str, tmp_path, input_shape=None) -> int:
    """The whole check of the file at `path` loaded at `input_shape` (None: as declared);
    the size it ran at."""
    graph = onnxmtl.load(path, input_shape=input_shape)
    assert graph.units
    module = lower(graph)
    result = verify(graph, module, tolerance=TOLERANCE)
    assert result.ok, f"{name}/{exporter}: {result}"
    size = graph.input_shape[2]
    x = torch.randn(2, 3, size, size)
    assert_gradients_reach_every_parameter(module, x)

    model = compile(graph, tasks()).eval()
    with torch.no_grad():
        features = model.features(x, mode="fixed", policy=model.uniform_policy(SHARED))
    expected = ort_features(graph, x)
    for t in range(len(model.tasks)):
        for got, want in zip(features[t], expected):
            assert_close(got, want, f"{name}/{exporter} task {t}")

    _hard_training_step(model, x, f"{name}/{exporter}")

    batch = 2 if (name, exporter) in STATIC_BATCH else None
    held = name in LOADS_AT_SIZE or (name, exporter) in DECLARED_SIZE_ONLY | GRID_REWRITTEN.keys()
    sizes = [size] if held else [size, smaller_size(size)]
    assert_random_policy_derives_and_exports(model, x, tmp_path, f"{name}/{exporter}", sizes, batch)
    return size


def _check(corpus, name: str, exporter: str, tmp_path) -> None:
    """The check at the declared size, and at a smaller one where the export alone does not
    run there: loaded at it, or refused in one line where the file holds its own size."""
    path = corpus(name, exporter)
    size = _check_at(path, name, exporter, tmp_path)
    smaller = (2, 3, smaller_size(size), smaller_size(size))
    if (name, exporter) in DECLARED_SIZE_ONLY:
        with pytest.raises(OnnxMtlError) as refused:
            onnxmtl.load(path, input_shape=smaller)
        said = str(refused.value)  # one line, naming where the size is held
        assert "\n" not in said and ("node" in said or "output" in said), said
    elif name in LOADS_AT_SIZE or (name, exporter) in GRID_REWRITTEN:
        assert _check_at(path, name, exporter, tmp_path / "smaller", smaller) == smaller[2]


@pytest.mark.parametrize(("name", "exporter"), DEFAULT, ids=[f"{n}-{e}" for n, e in DEFAULT])
def test_default_corpus_backbone(corpus, name, exporter, tmp_path):
    _check(corpus, name, exporter, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "exporter"), ALL, ids=[f"{n}-{e}" for n, e in ALL])
def test_corpus_backbone(corpus, name, exporter, tmp_path):
    _check(corpus, name, exporter, tmp_path)
