"""The compiler's invariants on TinyNet exports, against onnxruntime and the lowered backbone."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from onnx import helper

import onnxmtl
from onnxmtl.compiler import (
    SHARED,
    SKIP,
    SPECIFIC,
    Policy,
    Projection,
    Renorm,
    compile,
    load_supermodel,
    save_supermodel,
)
from onnxmtl.errors import ConfigError, ShapeError
from onnxmtl.lower import lower
from onnxmtl.tasks import Task
from tests.helpers import (
    EXPORTS,
    assert_close,
    image,
    losses,
    make_model,
    ort_features,
    output,
    tasks,
)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("exporter", "folded"), EXPORTS, ids=[f"{e}-{'folded' if f else 'bn'}" for e, f in EXPORTS]
)
def test_all_shared_equals_backbone(tiny_export, exporter, folded, x):
    graph = onnxmtl.load(tiny_export(exporter, fold_bn=folded))
    model = compile(graph, tasks()).eval()
    assert bool(model.renorms()) == folded
    with torch.no_grad():
        features = model.features(x, mode="fixed", policy=model.uniform_policy(SHARED))
    (expected,) = ort_features(graph, x)
    for t, (feat,) in enumerate(features):
        assert_close(feat, expected, f"task {t}")


def _load_branch(lowered, graph, model, t: int) -> None:
    attr_of = {onnx: attr for attr, onnx in lowered.onnx_names.items()}
    for unit, branches in zip(graph.units, model.units):
        source = branches.specific[t]
        for node, op in zip(unit.nodes, source.ops):
            lowered.get_submodule(attr_of[node]).load_state_dict(op.state_dict())
        for name, tensor in source.weights.state_dict().items():
            getattr(lowered.weights, name).data.copy_(tensor)


def test_all_specific_equals_independent_copies(tiny_export, x):
    graph = onnxmtl.load(tiny_export("legacy17"))
    model = compile(graph, tasks()).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for branches in model.units:
            for copy in branches.specific:
                for p in copy.parameters():
                    p.add_(0.1 * torch.randn(p.shape, generator=gen))
        features = model.features(x, mode="fixed", policy=model.uniform_policy(SPECIFIC))
        for t in range(len(model.tasks)):
            lowered = lower(graph).eval()
            _load_branch(lowered, graph, model, t)
            assert_close(features[t][0], lowered(x), f"task {t}")
        assert not torch.allclose(features[0][0], features[1][0])


def _with_skip(lowered, graph, unit_index: int, skip: torch.nn.Module):
    attr_of = {onnx: attr for attr, onnx in lowered.onnx_names.items()}
    unit = graph.units[unit_index]
    head = lowered.get_submodule(attr_of[unit.nodes[0]])
    last = lowered.get_submodule(attr_of[unit.nodes[-1]])
    seen = {}
    head.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    last.register_forward_hook(lambda m, args, out: skip(seen["x"]))
    return lowered


@pytest.mark.parametrize("kind", ["identity", "projection"])
def test_skipped_unit_equals_its_skip(tiny_export, x, kind):
    graph = onnxmtl.load(tiny_export("legacy17"))
    model = compile(graph, tasks()).eval()
    want = Projection if kind == "projection" else torch.nn.Identity
    u = next(i for i, b in enumerate(model.units) if isinstance(b.skip, want))
    choices = [[SHARED] * len(model.units) for _ in model.tasks]
    choices[0][u] = SKIP
    with torch.no_grad():
        features = model.features(x, mode="fixed", policy=choices)
        reference = _with_skip(lower(graph).eval(), graph, u, model.units[u].skip)
        assert_close(features[0][0], reference(x), "skipped task")
        assert_close(features[1][0], ort_features(graph, x)[0], "shared task")


def test_every_skip_reaches_the_units_output_shape(tmp_path):
    # An explicit Pad before an unpadded strided conv (TF "same" style, as EfficientNet-Lite).
    net = torch.nn.Sequential(
        torch.nn.ZeroPad2d((0, 1, 0, 1)),
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.ZeroPad2d(1),
        torch.nn.Conv2d(8, 8, 3, groups=8),
        torch.nn.Conv2d(8, 16, 1),
    ).eval()
    path = tmp_path / "padded.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 16, 16), path, dynamo=False)
    model = compile(onnxmtl.load(path, features=None), [Task("d", "depth")]).eval()
    assert all(b.skip is not None for b in model.units)
    assert model.units[1].skip.proj.groups == 8  # depthwise unit, depthwise projection
    assert model.units[2].skip.proj.groups == 8  # 8 -> 16: gcd groups
    full = compile(model.graph, [Task("d", "depth")], skip_projection="full")
    assert full.units[2].skip.proj.groups == 1
    x = torch.randn(2, 3, 16, 16)
    for unit, branches, xin in zip(model.graph.units, model.units, _unit_inputs(model, x)):
        assert tuple(branches.skip(xin).shape[1:]) == unit.out_shape[1:]


def _unit_inputs(model, x):
    seen = []
    hooks = [
        b.shared.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for b in model.units
    ]
    with torch.no_grad():
        model.features(x, mode="fixed")
    for h in hooks:
        h.remove()
    return seen


def test_skip_projection_none_keeps_only_identity_skips(tiny_export):
    graph = onnxmtl.load(tiny_export("legacy17"))
    model = compile(graph, tasks(), skip_projection="none")
    kept = [unit.keeps_shape for unit in graph.units]
    assert any(kept) and not all(kept), "TinyNet has units of both kinds"
    for u, (keeps, branches) in enumerate(zip(kept, model.units)):
        assert isinstance(branches.skip, torch.nn.Identity) if keeps else branches.skip is None
        assert bool(model.branch_mask[u, SKIP]) == keeps
    with pytest.raises(ConfigError, match="skip_projection must be one of grouped, full, none"):
        compile(graph, tasks(), skip_projection="identity")


def test_a_search_compiles_with_the_configs_skip_projection(tiny_export, tmp_path):
    data = dict(count=12, size=32, cache_dir=str(tmp_path / "data"))
    config = dict(batch_size=4, warmup_steps=1, search_steps=1, post_train_steps=1, data=data)
    run = tmp_path / "run"
    onnxmtl.search(
        tiny_export("legacy17"),
        "scenes",
        run,
        config={**config, "skip_projection": "none"},
        progress=False,
    )
    model = load_supermodel(run / "supermodel.pt")
    assert model.options["skip_projection"] == "none"
    assert [b.skip is None for b in model.units] == [not u.keeps_shape for u in model.graph.units]


def test_units_of_unknown_shape_get_no_skip(tiny_export):
    graph = onnxmtl.load(tiny_export("legacy17"))
    unit = graph.units[1]
    assert unit.keeps_shape
    graph.units[1] = dataclasses.replace(unit, in_shape=None, out_shape=None)
    model = compile(graph, tasks())
    assert model.units[1].skip is None and not model.branch_mask[1, SKIP]


def test_parameter_count_matches_the_units(tiny_export):
    graph = onnxmtl.load(tiny_export("legacy17", fold_bn=True))
    ts = tasks()
    model = compile(graph, ts)
    renorm = {i for i, _ in model.renorms()}
    branch = sum(
        u.params + (2 * u.out_shape[1] if i in renorm else 0) for i, u in enumerate(graph.units)
    )
    skips = 0
    for unit, b in zip(graph.units, model.units):
        if isinstance(b.skip, Projection):
            cin, cout = unit.in_shape[1], unit.out_shape[1]
            skips += cin // b.skip.proj.groups * cout + 2 * cout
    heads = sum(p.numel() for h in model.heads.values() for p in h.parameters())
    loose = graph.params - sum(u.params for u in graph.units)
    expected = (1 + len(ts)) * branch + skips + heads + loose + len(ts) * len(graph.units) * 3
    assert sum(p.numel() for p in model.parameters()) == expected


def test_soft_mode_gradients_reach_every_branch_and_logit(tiny_export, x):
    model = compile(onnxmtl.load(tiny_export("dynamo")), tasks()).train()
    losses(model, x, "soft").backward()
    for i, b in enumerate(model.units):
        for name, module in [
            ("shared", b.shared),
            ("skip", b.skip),
            *[(f"task{t}", m) for t, m in enumerate(b.specific)],
        ]:
            for p in module.parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"unit {i} {name}"
    grad = model.policy_logits.grad
    mask = model.branch_mask.expand_as(grad)
    assert (grad[mask] != 0).all()
    assert (grad[~mask] == 0).all()


def _count_calls(model):
    calls = {}
    for i, b in enumerate(model.units):
        b.shared.register_forward_hook(
            lambda *a, i=i: calls.__setitem__((i, "shared"), calls.get((i, "shared"), 0) + 1)
        )
        for t, m in enumerate(b.specific):
            m.register_forward_hook(
                lambda *a, i=i, t=t: calls.__setitem__((i, t), calls.get((i, t), 0) + 1)
            )
    return calls


def test_shared_units_run_once_for_all_tasks(tiny_export, x):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks()).eval()
    calls = _count_calls(model)
    with torch.no_grad():
        model(x, mode="fixed", policy=model.uniform_policy(SHARED))
    assert calls == {(i, "shared"): 1 for i in range(len(model.units))}
    calls.clear()
    choices = [[SHARED] * len(model.units) for _ in model.tasks]
    choices[2][3] = SPECIFIC  # task 2 branches off at unit 3; later shared units run twice
    with torch.no_grad():
        model(x, mode="fixed", policy=choices)
    assert calls[(3, 2)] == 1 and calls[(3, "shared")] == 1
    assert calls[(0, "shared")] == 1 and calls[(len(model.units) - 1, "shared")] == 2


def test_the_supermodel_interprets_one_fx_graph_with_a_node_per_unit(tiny_export):
    """After lowering there is one graph: each unit's chain of operators is one node calling
    `units.<index>`, in the units' order; every other module is a parameter-free op."""
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    calls = [n.target for n in model.backbone.nodes if n.op == "call_module"]
    units = [f"units.{i}" for i in range(len(model.units))]
    assert [c for c in calls if c in units] == units
    others = [c for c in calls if c not in units]
    assert all(isinstance(c, str) and c.startswith("ops.") for c in others)
    assert all(not list(model.get_submodule(c).parameters()) for c in others)
    code = model.backbone_code()
    assert code.count("getattr(self.units, ") == len(model.units)
    assert all(f'getattr(self.units, "{i}")' in code for i in range(len(model.units)))


def test_hard_mode_runs_sampled_branches_and_reaches_logits(tiny_export, x):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks(), shared_prefix=2).train()
    torch.manual_seed(0)
    calls = _count_calls(model)
    losses(model, x, "hard").backward()
    choices = model.last_choices
    for u in range(len(model.units)):
        specific = sum(row[u] == SPECIFIC for row in choices)
        assert sum(calls.get((u, t), 0) for t in range(3)) == specific
        assert calls.get((u, "shared"), 0) <= sum(row[u] == SHARED for row in choices)
    assert all(row[u] == SHARED for row in choices for u in range(2))
    grad = model.policy_logits.grad
    assert grad is not None and (grad[:, 2:][model.branch_mask[2:].expand(3, -1, -1)] != 0).any()
    assert (grad[:, :2] == 0).all()


def test_renormalized_folded_backbone_starts_as_the_backbone(tiny_export, x):
    graph = onnxmtl.load(tiny_export("legacy17", fold_bn=True))
    assert graph.normalization == "folded"
    model = compile(graph, tasks(), calibration=x)
    renorms = model.renorms()
    assert renorms and model.calibration == "data"
    assert all(
        isinstance(b.specific[0].renorm, Renorm) for i, _ in renorms for b in [model.units[i]]
    )
    policy = model.uniform_policy(SHARED)
    with torch.no_grad():
        model.eval()
        other = torch.randn(3, 3, 32, 32)
        (eval_out,) = model.features(other, mode="fixed", policy=policy)[0]
        model.train()  # batch statistics of the calibration batch (updates running stats)
        (train_out,) = model.features(x, mode="fixed", policy=policy)[0]
    assert_close(train_out, ort_features(graph, x)[0], "train mode, calibration batch")
    assert_close(eval_out, ort_features(graph, other)[0], "eval mode, other batch")
    assert not compile(graph, tasks(), renormalize=False).renorms()


def test_save_and_load_round_trip(tiny_export, x, tmp_path):
    model = compile(onnxmtl.load(tiny_export("dynamo", fold_bn=True)), tasks()).eval()
    with torch.no_grad():
        model.policy_logits.normal_()
        model.units[1].specific[2].ops[0].weight.mul_(1.5)
    save_supermodel(model, tmp_path / "s.pt")
    again = load_supermodel(tmp_path / "s.pt").eval()
    assert torch.equal(again.policy_logits, model.policy_logits)
    policy = [[SPECIFIC] * len(model.units) for _ in model.tasks]
    with torch.no_grad():
        a, b = model(x, mode="fixed", policy=policy), again(x, mode="fixed", policy=policy)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in [Task(**t) for t in [t.to_dict() for t in again.tasks]]] == [
        "seg",
        "depth",
        "cls",
    ]


def test_a_deep_copy_computes_as_the_original_and_trains_apart(corpus):
    """copy.deepcopy of a supermodel on a real backbone (deep enough that copying its IR node
    by node overflows the stack): the copy gives the original's outputs exactly, and
    changing the copy's parameters leaves the original's outputs as they were."""
    graph = onnxmtl.load(corpus("mobilenet_v2", "legacy17"))
    model = compile(graph, tasks()).eval()
    copied = copy.deepcopy(model)
    x = torch.randn(1, *graph.input_shape[1:], generator=torch.Generator().manual_seed(0))
    policy = [[(t + u) % 2 for u in range(len(model.units))] for t in range(len(model.tasks))]
    with torch.no_grad():
        before = model(x, mode="fixed", policy=policy)
        assert all(
            torch.equal(v, copied(x, mode="fixed", policy=policy)[k]) for k, v in before.items()
        )
        for p in copied.parameters():
            p.add_(1.0)
        after = model(x, mode="fixed", policy=policy)
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert copied.graph.model is not model.graph.model
    assert [n.op_type for n in copied.graph.nodes] == [n.op_type for n in model.graph.nodes]


def test_saved_supermodel_carries_its_policy(tiny_export, x, tmp_path):
    """The policy is saved with the supermodel, so a loaded one runs and derives the trained
    policy rather than all-shared; a file saved without one loads with none, which 'fixed'
    mode refuses instead of silently running all-shared."""
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks()).eval()
    assert model.policy == model.uniform_policy(SHARED)  # freshly compiled: all shared
    choices = [[(t + u) % 2 for u in range(len(model.units))] for t in range(len(model.tasks))]
    policy = Policy(model.task_names, model.unit_names, choices, method="argmax", seed=None)
    model.set_policy(policy)
    save_supermodel(model, tmp_path / "s.pt")
    again = load_supermodel(tmp_path / "s.pt").eval()
    assert again.policy == policy
    with torch.no_grad():
        a, b = again(x, mode="fixed"), again(x, mode="fixed", policy=policy)
    assert all(torch.equal(a[k], b[k]) for k in a)

    state = torch.load(tmp_path / "s.pt", weights_only=True)
    del state["policy"]  # as saved before the policy was
    torch.save(state, tmp_path / "old.pt")
    old = load_supermodel(tmp_path / "old.pt")
    assert old.policy is None
    with pytest.raises(ConfigError, match="carries no policy"):
        old(x, mode="fixed")
    other = Policy(["a"], model.unit_names, [choices[0]])
    with pytest.raises(ConfigError, match="policy is for tasks"):
        model.set_policy(other)


def test_outputs_and_bad_options(tiny_export, x):
    graph = onnxmtl.load(tiny_export("legacy17"))
    model = compile(graph, tasks()).eval()
    with torch.no_grad():
        out = model(x, mode="warmup")
    assert out["seg"].shape == (2, 5, 32, 32) and out["depth"].shape == (2, 1, 32, 32)
    assert out["cls"].shape == (2, 10)
    with pytest.raises(ConfigError, match="unknown mode 'sharp'"):
        model(x, mode="sharp")
    with pytest.raises(ConfigError, match="tau must be > 0"):
        model(x, mode="soft", tau=0)
    with pytest.raises(ConfigError, match="shared_prefix"):
        compile(graph, tasks(), shared_prefix=99)
    with pytest.raises(ConfigError, match="unique"):
        compile(graph, [Task("a", "depth"), Task("a", "depth")])


def test_policy_params_count_the_branches_a_policy_keeps(tiny_export):
    from onnxmtl.compiler import policy_params

    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks())
    heads = sum(p.numel() for h in model.heads.values() for p in h.parameters())
    backbone = model.graph.params
    assert policy_params(model, model.uniform_policy(SHARED).choices) == backbone + heads
    assert policy_params(model, model.uniform_policy(SPECIFIC).choices) == 3 * backbone + heads
    choices = model.uniform_policy(SHARED).choices
    choices[0][0] = SKIP  # another task still takes the shared branch: the skip is extra
    skip = sum(p.numel() for p in model.units[0].skip.parameters())
    assert policy_params(model, choices) == backbone + heads + skip


def _head_storage(model) -> set[int]:
    return {p.data_ptr() for h in model.heads.values() for p in h.parameters()}


def test_compiled_models_never_share_head_parameters(tiny_export, x):
    """A head given as a module is deep-copied into each model (the search's and every
    baseline's), so training one model's head leaves the other's and the given module as
    they were."""
    graph = onnxmtl.load(tiny_export("legacy17"))
    channels = graph.feature_shapes[-1][1]
    given = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 10)
    )
    before = {k: v.clone() for k, v in given.state_dict().items()}
    ts = [Task("seg", "segmentation", 5, head="conv"), Task("cls", "classification", 10, given)]
    first, second = compile(graph, ts), compile(graph, ts)
    assert not _head_storage(first) & _head_storage(second)
    assert not _head_storage(first) & {p.data_ptr() for p in given.parameters()}
    assert all(first.heads["cls"] is not m for m in (given, second.heads["cls"]))
    optimizer = torch.optim.SGD(first.heads.parameters(), lr=0.1)
    out = first(x, mode="warmup")
    (out["seg"].square().mean() + out["cls"].square().mean()).backward()
    optimizer.step()
    for name, value in given.state_dict().items():
        assert torch.equal(value, before[name])
        assert torch.equal(second.heads["cls"].state_dict()[name], before[name])
        assert not torch.equal(first.heads["cls"].state_dict()[name], before[name])
    assert not torch.equal(
        first.heads["seg"].classifier.weight, second.heads["seg"].classifier.weight
    )


def test_custom_heads_read_every_feature_value(tiny_export, x):
    """With several feature values, a head given as a factory receives all of them (a tuple);
    a head given by name reads the last one."""
    path = tiny_export("legacy17")
    full = onnxmtl.load(path, features=None)
    maps = [v for n in full.nodes for v in n.outputs if v.shape is not None and len(v.shape) == 4]
    graph = onnxmtl.load(path, features=[maps[2].name, maps[-3].name])
    seen = []

    class Pyramid(torch.nn.Module):
        def __init__(self, in_channels: int, outputs: int) -> None:
            super().__init__()
            self.out = torch.nn.Conv2d(in_channels, outputs, 1)

        def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
            seen.append(len(feats))
            return self.out(feats[-1])

    ts = [
        Task("depth", "depth", head=lambda task, c: Pyramid(c, task.num_outputs)),
        Task("seg", "segmentation", 5, head="conv1x1"),
    ]
    with torch.no_grad():
        out = compile(graph, ts).eval()(x, mode="warmup")
    assert seen == [2]
    assert out["depth"].shape == (2, 1, 32, 32) and out["seg"].shape == (2, 5, 32, 32)


def test_same_padding_geometry_with_a_symbolic_output_size():
    """A SAME-padded Conv whose output size shape inference left symbolic gets no padding
    offset from that dim (it used to fail subtracting from the dim's name)."""
    from types import SimpleNamespace

    from onnxmtl.compiler.build import _conv_geometry
    from onnxmtl.ir.units import Unit

    attributes = {
        "auto_pad": SimpleNamespace(as_string=lambda: "SAME_UPPER"),
        "strides": SimpleNamespace(as_ints=lambda: [2, 2]),
    }
    weight = SimpleNamespace(const_value=SimpleNamespace(shape=(8, 8, 3, 3)))
    node = SimpleNamespace(attributes=attributes, inputs=[None, weight])
    in_shape, out_shape = (1, 8, 16, 16), (1, 8, "h", 8)
    unit = Unit("c", "Conv", ("c",), "x", "y", ("w",), 0, 0, in_shape, out_shape, None, 1)
    geometry = _conv_geometry(node, unit)
    assert geometry is not None
    assert geometry.strides == (2, 2) and geometry.groups == 1
    assert geometry.offsets == (1, 1)  # 3x3 centre tap; padding 0 for 'h', 1 // 2 = 0 for 8


def test_a_batch_at_another_size_than_the_compiled_one_names_both_sizes():
    """A valid-padded convolution's skip reads a crop fixed at the compiled size, so a batch
    of another size cannot be mixed: a ShapeError names both sizes and the two ways out,
    instead of torch's raw size mismatch; at the compiled size the same model runs."""
    rng = np.random.default_rng(0)
    conv = helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3])
    relu = helper.make_node("Relu", ["c"], ["y"])
    weights = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32)}
    model = make_model([conv, relu], [image("x", ("N", 3, 16, 16))], [output()], weights)
    supermodel = compile(onnxmtl.load(model), [Task("d", "depth")])
    with torch.no_grad():
        assert supermodel(torch.randn(2, 3, 16, 16), mode="warmup")["d"].shape == (2, 1, 16, 16)
        with pytest.raises(ShapeError, match=r"compiled for 16x16 images.*on 20x20 ones.*resize"):
            supermodel(torch.randn(2, 3, 20, 20), mode="warmup")
