"""`clone_module` makes the copy `copy.deepcopy` makes: same types, attributes and values, new
tensors, tied tensors still tied."""

from __future__ import annotations

import copy

import torch
from torch import nn

from onnxmtl.compiler.clone import clone_module


class Tied(nn.Module):
    """Parameters, a buffer, a tied submodule, a frozen weight and plain attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.again = self.conv
        self.frozen = nn.Parameter(torch.randn(2), requires_grad=False)
        self.register_buffer("scale", torch.tensor([2.0]))
        self.register_buffer("nothing", None)
        self.args = [["x", None], ["w", "frozen"]]
        self.table = {"a": 1}
        self.ops = nn.ModuleList([nn.ReLU(), nn.Identity()])


def _assert_same_copy(a: nn.Module, b: nn.Module, original: nn.Module) -> None:
    assert type(a) is type(b)
    assert list(vars(a)) == list(vars(b))
    for (na, ta), (nb, tb), (_, to) in zip(
        a.state_dict(keep_vars=True).items(),
        b.state_dict(keep_vars=True).items(),
        original.state_dict(keep_vars=True).items(),
    ):
        assert na == nb
        assert type(ta) is type(tb) and ta.requires_grad == tb.requires_grad
        assert torch.equal(ta, tb) and torch.equal(ta, to)
        assert ta.data_ptr() != to.data_ptr() and tb.data_ptr() != to.data_ptr()
    for (na, ma), (nb, mb) in zip(a.named_modules(), b.named_modules()):
        assert na == nb and type(ma) is type(mb)
        for key, value in vars(ma).items():
            if key not in ("_parameters", "_buffers", "_modules"):
                assert vars(mb)[key] == value, (na, key)


def test_clone_matches_deepcopy() -> None:
    torch.manual_seed(0)
    module = Tied()
    module.norm.running_mean += 1.0
    expected = copy.deepcopy(module)
    cloned = clone_module(module)
    _assert_same_copy(expected, cloned, module)
    assert cloned.again is cloned.conv
    assert cloned.args == module.args and cloned.args is not module.args
    assert cloned.args[0] is not module.args[0]
    assert cloned.table is not module.table
    x = torch.randn(2, 3, 8, 8)
    module.eval()
    cloned.eval()
    assert torch.equal(cloned.norm(cloned.conv(x)), module.norm(module.conv(x)))


def test_clone_is_independent() -> None:
    module = Tied()
    cloned = clone_module(module)
    with torch.no_grad():
        cloned.conv.weight.add_(1.0)
    cloned.args.append(["x", None])
    assert not torch.equal(cloned.conv.weight, module.conv.weight)
    assert len(module.args) == 2


def test_clone_leaves_modules_with_their_own_copy_to_deepcopy() -> None:
    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    holder = nn.ModuleList([traced])
    cloned = clone_module(holder)
    assert isinstance(cloned[0], torch.fx.GraphModule)
    x = torch.randn(1, 2)
    assert torch.equal(cloned[0](x), traced(x))
    assert cloned[0].graph is not traced.graph


def test_a_tensor_carrying_more_than_its_values_is_deep_copied() -> None:
    module = nn.Module()
    tagged = torch.ones(3)
    tagged.tag = "calibrated"  # type: ignore[attr-defined]
    module.register_buffer("tagged", tagged)
    module.register_buffer("steps", torch.tensor(5))
    cloned = clone_module(module)
    assert cloned.tagged.tag == "calibrated" and cloned.tagged is not tagged
    assert torch.equal(cloned.tagged, tagged)
    assert torch.equal(cloned.steps, module.steps)
    assert cloned.steps.data_ptr() != module.steps.data_ptr()
