"""Files as onnx-caffe2 wrote the old model zoo (IR 3, weights among the inputs, a fixed batch
of 1 or 64 held by Reshape targets): each loads with its batch made symbolic, its lowered
module on a batch of 3 equals onnxruntime on the original file run at the file's own batch,
and it compiles, trains a step and derives and exports at its declared size, a smaller and a
larger one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import onnxmtl
from onnxmtl.compiler import compile
from onnxmtl.errors import FixedBatchError
from onnxmtl.lower import lower
from onnxmtl.lower.verify import run_module, verify
from onnxmtl.runtime import session
from onnxmtl.tasks import Task, loss_fn
from tests.helpers import (
    assert_gradients_reach_every_parameter,
    assert_random_policy_derives_and_exports,
)
from tests.legacy_zoo import IR_VERSION, NETS, SIZE

TOLERANCE = 1e-4
# Reshape targets that hold the spatial size (ShuffleNet's channel shuffle) follow the size the
# backbone is loaded at (`onnxmtl.ir.spatial`), and are constants of that size afterwards: its
# derived model exports at that size only.
SIZE_FIXED = {"shufflenet"}
SMALLER = 3 * SIZE // 4  # a smaller input size: the maps' sides at 3/4, as in the corpus
CASES = [(name, batch) for name in NETS for batch in (1, 64)]
IDS = [f"{name}-batch{batch}" for name, batch in CASES]


def _file(tmp_path, name: str, batch: int):
    proto = NETS[name](batch)
    assert proto.ir_version == IR_VERSION
    assert {i.name for i in proto.graph.input} >= {t.name for t in proto.graph.initializer}
    path = tmp_path / f"{name}{batch}.onnx"
    onnx.save(proto, path)
    return path, proto


def _at_file_batch(proto: onnx.ModelProto, x: np.ndarray, batch: int) -> list[np.ndarray]:
    """onnxruntime on the original file, `x` run in batches of the file's size (the last one
    filled with zeros), its outputs for `x` only."""
    sess = session(proto, ["CPUExecutionProvider"])
    runs = -(-len(x) // batch)
    padded = np.zeros((runs * batch, *x.shape[1:]), np.float32)
    padded[: len(x)] = x
    outs = [sess.run(None, {"data": padded[i * batch : (i + 1) * batch]}) for i in range(runs)]
    return [np.concatenate(parts)[: len(x)] for parts in zip(*outs)]


@pytest.mark.parametrize(("name", "batch"), CASES, ids=IDS)
def test_the_batch_is_made_symbolic_and_matches_the_file(name, batch, tmp_path):
    path, proto = _file(tmp_path, name, batch)
    graph = onnxmtl.load(path, features=None)
    assert graph.static_batch and graph.batch_made_dynamic
    assert graph.input_shape == ("N", 3, SIZE, SIZE)
    module = lower(graph)
    assert verify(graph, module, tolerance=TOLERANCE).ok
    x = np.random.default_rng(1).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    got, want = run_module(module, x), _at_file_batch(proto, x, batch)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert np.max(np.abs(g - w)) <= TOLERANCE * max(float(np.max(np.abs(w))), 1e-12)


def _tasks() -> list[Task]:
    return [Task("seg", "segmentation", 4, head="conv"), Task("cls", "classification", 5)]


@pytest.mark.parametrize(("name", "batch"), CASES, ids=IDS)
def test_compiles_trains_and_exports_at_three_sizes(name, batch, tmp_path):
    """At the declared size, and exported at a smaller and a larger one; a backbone whose
    graph holds the size it was loaded at is loaded at the smaller one and checked again."""
    path, _ = _file(tmp_path, name, batch)
    if name in SIZE_FIXED:
        _trains_and_exports(onnxmtl.load(path), SIZE, tmp_path, f"{name}-batch{batch}", (None,))
        smaller = onnxmtl.load(path, input_shape=(1, 3, SMALLER, SMALLER))
        _trains_and_exports(smaller, SMALLER, tmp_path / "smaller", f"{name}-batch{batch}", (None,))
    else:
        sizes = (None, SMALLER, 2 * SIZE)
        _trains_and_exports(onnxmtl.load(path), SIZE, tmp_path, f"{name}-batch{batch}", sizes)


def _trains_and_exports(graph, size: int, tmp_path, label: str, sizes) -> None:
    """Gradients reach every parameter; compiled, a hard step's loss is finite; a random
    policy derives and exports at `sizes`, onnxruntime agreeing with the derived model."""
    assert graph.units
    x = torch.randn(2, 3, size, size)
    assert_gradients_reach_every_parameter(lower(graph), x)
    model = compile(graph, _tasks())
    outputs = model(x, mode="hard", tau=1.0)
    targets = {
        "seg": torch.randint(0, 4, (2, *outputs["seg"].shape[2:])),
        "cls": torch.randint(0, 5, (2,)),
    }
    loss = sum(loss_fn(t)(outputs[t.name], targets[t.name]) for t in model.tasks)
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    tmp_path.mkdir(exist_ok=True)
    assert_random_policy_derives_and_exports(model, x, tmp_path, label, sizes)


@pytest.mark.parametrize("size", [SMALLER, 2 * SIZE], ids=["smaller", "larger"])
@pytest.mark.parametrize(("name", "batch"), CASES, ids=IDS)
def test_loads_at_another_input_size(name, batch, size, tmp_path):
    """Another input than the file declares: the backbone's fixed pools adapt, Reshape
    targets holding the map's height and width follow it, and its batch still frees (a
    classifier sized for the declared input is cut away); onnxruntime agrees with the lowered
    model at that size."""
    path, _ = _file(tmp_path, name, batch)
    graph = onnxmtl.load(path, input_shape=(1, 3, size, size))
    assert graph.batch_made_dynamic and graph.input_shape == ("N", 3, size, size)
    assert verify(graph, lower(graph), tolerance=TOLERANCE).ok
    spatial = [a for a in graph.adaptations if a.startswith("Reshape ")]
    assert len(spatial) == (4 if name == "shufflenet" else 0), spatial  # two shuffles


def test_a_file_onnxruntime_refuses_at_another_size_is_one_error_and_nothing_logged(
    tmp_path, capfd
):
    """VGG's whole graph at twice its size: its classifier cannot take the larger map, so the
    file itself fails on onnxruntime; the error says so once, and onnxruntime logs nothing."""
    path, _ = _file(tmp_path, "vgg", 1)
    with pytest.raises(FixedBatchError, match="the file itself fails on onnxruntime") as info:
        onnxmtl.load(path, features=None, input_shape=(1, 3, 2 * SIZE, 2 * SIZE))
    assert "\n" not in str(info.value)
    assert capfd.readouterr().err == ""
