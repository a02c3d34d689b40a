"""Keras applications exported by tf2onnx without `--inputs-as-nchw` (channels-last inputs, as
TensorFlow users bring them) through the whole back end: load adapts the layout, the lowered
graph equals onnxruntime on the original file, a hard-mode training step runs, and a derived
model equals its supermodel and exports.

Every test is slow: converters/export_keras.py builds its own TensorFlow environment once
(`pytest -m slow tests/test_corpus_keras.py`). Exports are cached under .cache/corpus-keras.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import onnxmtl
from onnxmtl.compiler import SHARED, SPECIFIC, compile
from onnxmtl.lower import lower
from onnxmtl.lower.verify import run_module, verify
from onnxmtl.runtime import session
from onnxmtl.tasks import loss_fn
from tests.conftest import ROOT
from tests.helpers import assert_close, assert_random_policy_derives_and_exports, tasks

sys.path.insert(0, str(ROOT))

from converters import export_keras  # noqa: E402

pytestmark = pytest.mark.slow

# Relative to the output scale (float32 through 50+ layers stays far below it).
TOLERANCE = 1e-4
# The declared size, and a smaller one every architecture here accepts; files built for any
# size try one whose maps turn odd (160 -> 5x5), where SAME padding is asymmetric.
CASES = [
    (name, size)
    for name, spec in export_keras.MODELS.items()
    for size in (224, 160 if spec.any_size else 128)
]


@pytest.fixture(scope="module")
def keras_corpus() -> Path:
    """The exported files, made (once) by the converter in a subprocess, in its own venv."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "converters" / "export_keras.py"), "all"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode == 3:  # the converter's "pip could not install" exit
        pytest.skip(f"TensorFlow unavailable: {done.stdout.strip()}")
    print(done.stdout[-2000:])
    return export_keras.OUT_DIR


def _file(keras_corpus: Path, name: str) -> Path:
    path = export_keras.corpus_path(keras_corpus, name)
    assert path.exists(), f"{name}: the converter wrote no file (see the fixture's output)"
    return path


def _nhwc_images(size: int) -> np.ndarray:
    return np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32) * 2 - 1


def _original_outputs(path: Path, nhwc: np.ndarray) -> list[np.ndarray]:
    """onnxruntime on the unchanged file; image by image where its batch is a fixed 1."""
    sess = session(str(path), ["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    if sess.get_inputs()[0].shape[0] == 1:
        runs = [sess.run(None, {name: nhwc[i : i + 1]}) for i in range(len(nhwc))]
        return [np.concatenate(parts) for parts in zip(*runs)]
    return sess.run(None, {name: nhwc})


def _hard_step(model, x: torch.Tensor) -> None:
    """One hard-mode training step: finite losses, and gradients reach the weights of every
    branch that ran (the shared or task-specific copy each task sampled)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    out = model(x, mode="hard", tau=1.0)
    gen = torch.Generator().manual_seed(0)
    size = x.shape[-1]
    targets = {
        "seg": torch.randint(0, 5, (2, size, size), generator=gen),
        "depth": torch.rand(2, 1, size, size, generator=gen) + 0.5,
        "cls": torch.randint(0, 10, (2,), generator=gen),
    }
    losses = [loss_fn(t)(out[t.name], targets[t.name]) for t in model.tasks]
    assert all(torch.isfinite(loss) for loss in losses), losses
    optimizer.zero_grad()
    sum(losses).backward()
    for t, row in enumerate(model.last_choices):
        for u, choice in enumerate(row):
            unit = model.units[u]
            branch = {SHARED: unit.shared, SPECIFIC: unit.specific[t]}.get(choice)
            if branch is None:
                continue
            params = [p for p in branch.parameters() if p.requires_grad]
            assert not params or any(
                p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params
            ), f"unit {u} task {t}: no gradient reached the branch it ran"
    optimizer.step()
    model.eval()


@pytest.mark.parametrize(("name", "size"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_keras_backbone(keras_corpus, name, size, tmp_path):
    path = _file(keras_corpus, name)
    spec = export_keras.MODELS[name]
    shape = None if size == spec.input_size and not spec.any_size else (1, 3, size, size)
    nhwc = _nhwc_images(size)
    x = torch.from_numpy(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))

    # The model's own outputs: the adapted graph takes NCHW and equals the file fed NHWC.
    graph = onnxmtl.load(path, features=None, input_shape=shape)
    assert any("channels-last" in line for line in graph.adaptations), graph.adaptations
    assert graph.input_shape[1:] == (3, size, size)
    module = lower(graph)
    if size == spec.input_size or spec.any_size:  # where the original file runs
        want = _original_outputs(path, nhwc)
        got = run_module(module, x.numpy())
        for g, w in zip(got, want, strict=True):
            assert_close(torch.as_tensor(g), w, f"{name} lowered vs onnxruntime (NHWC)")
    else:  # elsewhere the adapted graph, run by onnxruntime, is the reference
        result = verify(graph, module, tolerance=TOLERANCE)
        assert result.ok, f"{name} at {size}: {result}"

    # The backbone's features through the multi-task back end.
    graph = onnxmtl.load(path, input_shape=shape)
    model = compile(graph, tasks())
    torch.manual_seed(0)
    _hard_step(model, x)
    assert_random_policy_derives_and_exports(model, x, tmp_path, name)
