"""Test helpers shared by the test modules: small ONNX models built by hand and compared with
onnxruntime, the compiler's tasks and tolerance, a seeded random policy derived and exported,
the CLI run in a subprocess, a labelled dataset folder, and a tiny search config."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxmtl
from onnxmtl.derived import derive
from onnxmtl.exporter import export
from onnxmtl.lower import lower
from onnxmtl.lower.verify import run_module
from onnxmtl.runtime import session
from onnxmtl.tasks import Task, loss_fn
from tests.conftest import EXPORTERS

IR_VERSION = 10


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked ModelProto at `opset`, saved with an IR version onnxruntime reads."""
    graph = helper.make_graph(
        nodes,
        "test",
        inputs,
        outputs,
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    model = onnx.shape_inference.infer_shapes(model)  # fills the outputs' shapes
    onnx.checker.check_model(model)
    return model


def image(name: str = "x", shape=("N", 3, 8, 8)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def output(name: str = "y", elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None)


def lowered_vs_ort(model: onnx.ModelProto, x: np.ndarray, features=None) -> tuple[list, list]:
    """Outputs of the original model in onnxruntime and of the lowered IR in torch."""
    graph = onnxmtl.load(model, features=features)
    names = graph.features
    expected = session(model, ["CPUExecutionProvider"]).run(names, {graph.input_name: x})
    return expected, run_module(lower(graph), x)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_gradients_reach_every_parameter(module: torch.nn.Module, x: torch.Tensor) -> None:
    """Every parameter gets a finite gradient from a loss on every output."""
    module.train()
    out = module(x)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    sum((o.float() ** 2).mean() for o in outs).backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    bad = [n for n, p in module.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad[:5]}"


# The compiler's tolerance: relative to the output scale (float32 through a dozen layers).
COMPILER_TOLERANCE = 1e-4


def tasks() -> list[Task]:
    return [
        Task("seg", "segmentation", 5, head="conv"),
        Task("depth", "depth"),
        Task("cls", "classification", 10),
    ]


def ort_features(graph, x: torch.Tensor) -> list[np.ndarray]:
    sess = session(graph.to_proto(), ["CPUExecutionProvider"])
    return sess.run(graph.features, {graph.input_name: x.numpy()})


def assert_close(actual: torch.Tensor, expected, what: str) -> None:
    expected = torch.as_tensor(np.asarray(expected))
    scale = max(float(expected.abs().max()), 1e-6)
    diff = float((actual.detach() - expected).abs().max()) / scale
    assert diff <= COMPILER_TOLERANCE, f"{what}: relative diff {diff:.3g}"


EXPORTS = [(e, False) for e in EXPORTERS] + [("dynamo", True), ("legacy17", True)]


def losses(model, x, mode, device="cpu"):
    out = model(x, mode=mode)
    gen = torch.Generator().manual_seed(0)
    targets = {
        "seg": torch.randint(0, 5, (2, 32, 32), generator=gen),
        "depth": torch.rand(2, 1, 32, 32, generator=gen) + 0.5,
        "cls": torch.randint(0, 10, (2,), generator=gen),
    }
    return sum(loss_fn(t)(out[t.name], targets[t.name].to(device)) for t in model.tasks)


def random_choices(model, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [
        [
            rng.choice([b for b in range(3) if model.branch_mask[u, b]])
            for u in range(len(model.units))
        ]
        for _ in model.tasks
    ]


POLICY_SEEDS = (0, 1, 2)


def assert_random_policy_derives_and_exports(
    model, x: torch.Tensor, folder, label: str = "", sizes=(None,), batch=None
) -> None:
    """The derived models of POLICY_SEEDS random policies compute what the supermodel computes
    under each (a property of derive, which traces it), and the first one's ONNX export (at
    each of `sizes`; None: the model's own) what that derived model computes, within
    COMPILER_TOLERANCE."""
    for seed in reversed(POLICY_SEEDS):
        choices = random_choices(model, seed)
        derived = derive(model, choices).eval()
        with torch.no_grad():
            want, got = model(x, mode="fixed", policy=choices), derived(x)
        for task in model.task_names:
            assert_close(got[task], want[task], f"{label} policy {seed} derived {task}".strip())
    for size in sizes:
        path = folder / f"derived{size or ''}.onnx"
        shape = None if size is None else (size, size)
        report = export(derived, path, shape, tolerance=COMPILER_TOLERANCE, batch=batch)
        assert report.max_rel_diff <= COMPILER_TOLERANCE, f"{label} exported at {size}"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxmtl.cli", *args], capture_output=True, text=True, timeout=300
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def make_folder(root, split: str, n: int, nyu: bool, size=(6, 8)) -> None:
    rng = np.random.default_rng(0)
    label_dir = "label" if nyu else "label_7"
    for sub in ["image", label_dir, "depth"] + (["normal"] if nyu else []):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(root / split / "image" / f"{i}.npy", rng.random((*size, 3)).astype(np.float32))
        label = rng.integers(-1, 13 if nyu else 7, size)
        np.save(root / split / label_dir / f"{i}.npy", label.astype(np.float32))
        np.save(root / split / "depth" / f"{i}.npy", rng.random((*size, 1)).astype(np.float32))
        if nyu:
            normal = rng.normal(size=(*size, 3))
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            np.save(root / split / "normal" / f"{i}.npy", normal.astype(np.float32))


# A search config small enough for the tests (the search and precision tests).
TINY = dict(
    batch_size=4,
    warmup_steps=3,
    search_steps=6,
    post_train_steps=3,
    checkpoint_every=2,
)


def tiny_model(tiny_export, tasks):
    return onnxmtl.compile(onnxmtl.load(tiny_export("legacy17", fold_bn=True)), tasks)
