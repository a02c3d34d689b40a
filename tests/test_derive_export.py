"""Derived models against the supermodel, and their ONNX exports against onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import onnxmtl
from onnxmtl.compiler import SHARED, SKIP, SPECIFIC, Projection, compile, policy_params
from onnxmtl.derived import UnitBranch, derive, load_derived, save_derived
from onnxmtl.errors import ConfigError, ModelFileError, ShapeError
from onnxmtl.exporter import POLICY_KEY, export
from onnxmtl.runtime import session
from onnxmtl.tasks import Task
from tests.conftest import EXPORTERS, converters
from tests.helpers import EXPORTS, random_choices, tasks

# Derived and supermodel run the same modules in the same order: equal up to float rounding.
SAME = 1e-6
# onnxruntime against PyTorch, relative to the output scale.
TOLERANCE = 1e-4


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def head_convs(model) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.heads.modules())


def onnx_convs(path) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load(path).graph.node)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize(
    ("exporter", "folded"), EXPORTS, ids=[f"{e}-{'folded' if f else 'bn'}" for e, f in EXPORTS]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_derived_equals_the_supermodel_under_its_policy(tiny_export, exporter, folded, seed, x):
    model = compile(onnxmtl.load(tiny_export(exporter, fold_bn=folded)), tasks()).eval()
    choices = random_choices(model, seed)
    derived = derive(model, choices).eval()
    with torch.no_grad():
        want, got = model(x, mode="fixed", policy=choices), derived(x)
    for name in model.task_names:
        scale = float(want[name].abs().max())
        assert float((got[name] - want[name]).abs().max()) <= SAME * scale, name
    assert n_params(derived) == policy_params(model, choices)


def test_units_run_once_per_group_of_tasks_on_the_same_value(tiny_export):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    units = len(model.units)
    shared = derive(model, model.uniform_policy(SHARED))
    assert shared.branch_counts() == {"shared": units, "specific": 0, "skip": 0}
    specific = derive(model, model.uniform_policy(SPECIFIC))
    assert specific.branch_counts() == {"shared": 0, "specific": 3 * units, "skip": 0}
    # task 0 branches off at the first unit; the others share it, then every later shared
    # unit runs once per distinct input: twice.
    choices = [[SHARED] * units for _ in range(3)]
    choices[0][0] = SPECIFIC
    assert derive(model, choices).branch_counts() == {
        "shared": 1 + 2 * (units - 1),
        "specific": 1,
        "skip": 0,
    }


def test_a_derived_model_prints_as_readable_fx_code(tiny_export, x):
    """The derived model is an fx GraphModule whose code calls each kept unit branch by its
    qualified name; a unit every task skips is gone; its outputs are the supermodel's under
    the same policy (within SAME of the output scale)."""
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks()).eval()
    units = len(model.units)
    skipped = next(u for u, b in enumerate(model.units) if isinstance(b.skip, nn.Identity))
    own = next(u for u in range(units) if u not in (skipped, units - 1))
    choices = [[SHARED] * units for _ in range(3)]
    for row in choices:
        row[skipped] = SKIP
    choices[1][own] = SPECIFIC  # depth's own copy, after which the shared units run twice
    derived = derive(model, choices).eval()
    code = derived.code
    assert isinstance(derived, torch.fx.GraphModule)
    assert "def forward(self, image)" in code
    assert f"self.units.u{own}.specific.depth(" in code
    assert derived.branches[f"units.u{own}.specific.depth"] == UnitBranch(own, "specific", "depth")
    assert f"units.u{skipped}." not in code and f"units_u{skipped}_" not in code
    assert code.count(f"self.units.u{units - 1}.shared(") == 2
    assert "rows = (0, 2)" in code and "rows = (1,)" in code
    assert "self.heads.depth(" in code and "return {'seg': seg, 'depth': depth, 'cls':" in code
    assert derived.print_readable(print_output=False).startswith("class DerivedModel")
    with torch.no_grad():
        want, got = model(x, mode="fixed", policy=choices), derived(x)
    assert list(got) == model.task_names
    for name in model.task_names:
        scale = float(want[name].abs().max())
        assert float((got[name] - want[name]).abs().max()) <= SAME * scale, name


@pytest.mark.parametrize("branch_at", [0, 3, 7])
def test_each_shared_conv_is_exported_once(tiny_export, tmp_path, branch_at):
    model = compile(onnxmtl.load(tiny_export("dynamo")), tasks())
    units = len(model.units)
    assert all(u.op_type == "Conv" for u in model.graph.units)
    choices = [[SHARED] * branch_at + [SPECIFIC] * (units - branch_at) for _ in range(3)]
    report = export(derive(model, choices), tmp_path / "m.onnx")
    expected = branch_at + 3 * (units - branch_at) + head_convs(model)
    assert report.conv_nodes == onnx_convs(tmp_path / "m.onnx") == expected


def test_skipped_units_vanish(tiny_export, tmp_path):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    choices = [[SKIP if model.branch_mask[u, SKIP] else SHARED for u in range(len(model.units))]]
    choices *= 3
    derived = derive(model, choices)
    projections = sum(isinstance(b.skip, Projection) for b in model.units)
    assert derived.branch_counts() == {"shared": 0, "specific": 0, "skip": projections}
    assert not any(b.kind == "shared" for b in derived.branches.values())
    report = export(derived, tmp_path / "m.onnx")
    assert report.conv_nodes == projections + head_convs(model)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_export_matches_onnxruntime_with_any_batch(tiny_export, tmp_path, exporter, x):
    model = compile(onnxmtl.load(tiny_export(exporter, fold_bn=True)), tasks())
    choices = random_choices(model, 3)
    derived = derive(model, choices).eval()
    path = tmp_path / "model.onnx"
    report = export(derived, path)
    assert report.max_rel_diff <= TOLERANCE
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version <= 10
    assert [o.name for o in proto.graph.output] == ["seg", "depth", "cls"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[POLICY_KEY])["choices"] == choices
    with torch.no_grad():
        want = derived(x)
    got = session(str(path), ["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    for name, out in zip(["seg", "depth", "cls"], got):
        assert out.shape == tuple(want[name].shape)
        scale = float(want[name].abs().max())
        assert np.abs(out - want[name].numpy()).max() <= TOLERANCE * scale, name


def test_fp16_export_keeps_float32_io_within_its_tolerance(tiny_export, tmp_path, x):
    """Computes in float16 (weights stored as float16) between a float32 input and float32
    outputs; onnxruntime is within 1e-2 of the float32 PyTorch model's output scale."""
    model = compile(onnxmtl.load(tiny_export("legacy17", fold_bn=True)), tasks())
    derived = derive(model, random_choices(model, 5)).eval()
    half = export(derived, tmp_path / "half.onnx", fp16=True)
    full = export(derived, tmp_path / "full.onnx")
    assert half.precision == "fp16" and half.tolerance == 1e-2 and full.tolerance == 1e-4
    assert full.max_rel_diff < half.max_rel_diff <= 1e-2
    proto = onnx.load(tmp_path / "half.onnx")
    elem = onnx.TensorProto.FLOAT
    assert proto.graph.input[0].type.tensor_type.elem_type == elem
    assert all(o.type.tensor_type.elem_type == elem for o in proto.graph.output)
    weights = [t for t in proto.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["onnxmtl.precision"] == "fp16"
    with torch.no_grad():
        want = derived(x)
    got = session(str(tmp_path / "half.onnx"), ["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )
    for name, out in zip(derived.task_names, got):
        scale = float(want[name].abs().max())
        assert np.abs(out - want[name].numpy()).max() <= 1e-2 * scale, name
    assert (tmp_path / "full.onnx").stat().st_size > 1.5 * (tmp_path / "half.onnx").stat().st_size


class ChannelShuffle(nn.Module):
    """Reshapes to a shape computed from the batch size, as ShuffleNet does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.conv2(x)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy17"])
def test_shapes_computed_from_the_batch_stay_dynamic(tmp_path, exporter):
    torch.manual_seed(0)
    source = tmp_path / "shuffle.onnx"
    converters.export(ChannelShuffle().eval(), source, exporter, 16, False)
    model = compile(onnxmtl.load(source), [Task("d", "depth", head="conv1x1")])
    derived = derive(model, model.uniform_policy(SPECIFIC)).eval()
    export(derived, tmp_path / "m.onnx")  # checks a batch of 2 after tracing with 1
    x = torch.randn(5, 3, 16, 16)
    (got,) = session(str(tmp_path / "m.onnx"), ["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )
    with torch.no_grad():
        want = derived(x)["d"]
    assert np.abs(got - want.numpy()).max() <= TOLERANCE * float(want.abs().max())


def test_a_fixed_batch_export(tiny_export, tmp_path):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    report = export(derive(model), tmp_path / "m.onnx", batch=3)
    assert report.input_shape == (3, 3, 32, 32) and report.max_rel_diff <= TOLERANCE
    dims = onnx.load(tmp_path / "m.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 3, 32, 32]


def test_single_task_model_keeps_one_head_and_one_copy(tiny_export, tmp_path):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    single = derive(model, tasks=["depth"])
    assert single.task_names == ["depth"]
    units = sum(n_params(b.shared) for b in model.units)
    loose = sum(p.numel() for p in model.weights.parameters())
    assert n_params(single) == units + loose + n_params(model.heads["depth"])
    report = export(single, tmp_path / "depth.onnx")
    assert report.outputs == ["depth"]
    assert report.conv_nodes == len(model.units) + sum(
        isinstance(m, nn.Conv2d) for m in model.heads["depth"].modules()
    )


def test_save_and_load_keep_trained_weights(tiny_export, tmp_path, x):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    choices = random_choices(model, 5)
    derived = derive(model, choices)
    with torch.no_grad():
        for p in derived.parameters():
            p.add_(0.01 * torch.randn_like(p))
    derived.eval()
    save_derived(derived, model, tmp_path / "derived.pt")
    loaded = load_derived(tmp_path / "derived.pt").eval()
    assert loaded.policy.choices == choices
    with torch.no_grad():
        want, got = derived(x), loaded(x)
    for name in want:
        assert torch.equal(want[name], got[name])


def test_bad_requests_get_clear_errors(tiny_export, tmp_path):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    with pytest.raises(ConfigError, match="supermodel has tasks"):
        derive(model, tasks=["nope"])
    with pytest.raises(ConfigError, match="export takes a DerivedModel"):
        export(model, tmp_path / "m.onnx")
    derived = derive(model)
    derived.input_shape = ("N", 3, "H", "W")
    with pytest.raises(ShapeError, match="--input-size"):
        export(derived, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="junk.pt"):
        load_derived(tmp_path / "junk.pt")
