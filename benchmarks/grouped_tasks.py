"""Would running the tasks' copies together make a search step cheaper than separate runs?

    .venv/bin/python benchmarks/grouped_tasks.py [--repeats 7] [--threads 2]

A soft search step runs, for every task, that task's copy of each unit. Issue 19 suggested
running the T copies of a unit as one grouped convolution over the stacked inputs. This
script times the best case of that idea on the CPU, one training step (forward, backward) of
torchvision's MobileNetV2 features for 3 tasks, batch 4, 128x128, three ways, interleaved in
one process (`interleaved_times`, medians):

- apart: the three copies one after the other (what three single-task steps compute);
- grouped: one network whose every layer holds the three copies side by side: the first
  convolution with 3x the output channels (the image is common to all tasks), every later
  one with 3x the channels and 3x the groups, every BatchNorm over 3x the channels, so each
  operator runs once for all tasks on channel-stacked activations;
- vmap: `torch.func.vmap` over the three copies' stacked parameters (torch's ensembling),
  whose batching rule turns each convolution into a grouped one.

All three compute the same function (the script checks the grouped network's output against
the copies' within 1e-4, and the soft ways below at p_own = 1 against the copy they start
from). A ratio near 1 means the grouped kernels cost what the separate
ones do: the step is bound by the convolutions' arithmetic, not by the number of operators,
and no interpreter change removes that work.

Two more ways bound what a task-stacked interpreter could make of a parameter-mixed soft
search step (`soft_mix: parameters`), the grouped network with a soft step's extra work:

- grouped soft: every convolution and its BatchNorm a unit, each task's kernel and affine
  parameters mixed from a shared copy and its own by Gumbel-softmax weights (p_shared,
  p_own, p_skip) sampled from policy logits, and the skip added weighted by p_skip: the
  input itself where the unit keeps its shape, otherwise a 1x1 projection with gcd(C_in,
  C_out) groups and a BatchNorm (onnxmtl's default skip), task-stacked as well;
- grouped soft, identity skips: the same without projections (`skip_projection: none`).

With `--with-onnxmtl`, onnxmtl's own steps on the same backbone exported to ONNX
(`compile_search.make_step`: three single-task steps and the parameter-mixed soft step,
with grouped projections and without) are timed in the same rounds, so each best case can be
read against the step onnxmtl takes now and against three single-task steps.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxmtl.benchmark.timing import interleaved_times  # noqa: E402

TASKS, BATCH, SIZE = 3, 4, 128
# (way, with skip projections, onnxmtl's step of the same search space: compile_search's config)
SOFT_WAYS = (
    ("grouped soft", True, "soft-parameters"),
    ("grouped soft, identity skips", False, "soft-parameters-identity-skips"),
)


def grouped(copies: list[nn.Module]) -> nn.Module:
    """One network computing every copy of `copies` side by side on channel-stacked values."""
    wide = copy.deepcopy(copies[0])
    first = True  # the first convolution reads the image, common to every copy

    def widen(stacked: nn.Module, parts: list[nn.Module]) -> None:
        nonlocal first
        for name, child in stacked.named_children():
            same = [dict(p.named_children())[name] for p in parts]
            if isinstance(child, nn.Conv2d):
                t = len(parts)
                groups = child.groups if first else child.groups * t
                cin = child.in_channels if first else child.in_channels * t
                new = nn.Conv2d(
                    cin,
                    child.out_channels * t,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    groups=groups,
                    bias=child.bias is not None,
                )
                with torch.no_grad():
                    new.weight.copy_(torch.cat([c.weight for c in same]))
                first = False
                setattr(stacked, name, new)
            elif isinstance(child, nn.BatchNorm2d):
                new_norm = nn.BatchNorm2d(child.num_features * len(parts))
                with torch.no_grad():
                    new_norm.weight.copy_(torch.cat([c.weight for c in same]))
                    new_norm.bias.copy_(torch.cat([c.bias for c in same]))
                setattr(stacked, name, new_norm)
            else:
                widen(child, same)

    widen(wide, copies)
    return wide


class Mixing:
    """The Gumbel-softmax weights of one soft step, (tasks, units, 3), read by every unit."""

    def __init__(self, units: int) -> None:
        self.logits = nn.Parameter(torch.zeros(TASKS, units, 3))
        self.weights = torch.empty(0)

    def sample(self) -> None:
        self.weights = F.gumbel_softmax(self.logits, tau=5.0, dim=-1)


class SoftUnit(nn.Module):
    """A convolution and its BatchNorm for every task side by side, as a parameter-mixed soft
    step runs it at best: each task's kernel and affine parameters mixed from the shared
    copy's and its own, one grouped convolution and one BatchNorm over channel-stacked
    values, and the skip added with its weight (the input where the shape is kept, else a
    task-stacked grouped 1x1 projection and its BatchNorm, or nothing with `projections`
    off)."""

    def __init__(
        self,
        conv: nn.Conv2d,
        norm: nn.BatchNorm2d,
        index: int,
        mixing: Mixing,
        first: bool,
        projections: bool,
    ) -> None:
        super().__init__()
        self.index, self.mixing, self.first = index, mixing, first
        self.conv = conv
        self.shared_w = nn.Parameter(conv.weight.detach().clone())
        self.own_w = nn.Parameter(conv.weight.detach().repeat(TASKS, 1, 1, 1))
        self.shared_g = nn.Parameter(norm.weight.detach().clone())
        self.own_g = nn.Parameter(norm.weight.detach().repeat(TASKS))
        self.shared_b = nn.Parameter(norm.bias.detach().clone())
        self.own_b = nn.Parameter(norm.bias.detach().repeat(TASKS))
        cout = conv.out_channels
        self.register_buffer("mean", torch.zeros(cout * TASKS))
        self.register_buffer("var", torch.ones(cout * TASKS))
        cin = conv.in_channels
        self.keeps = cin == cout and conv.stride == (1, 1) and not first
        self.project: nn.Sequential | None = None
        if projections and not self.keeps:
            groups = math.gcd(cin, cout)
            self.project = nn.Sequential(
                nn.Conv2d(
                    cin if first else cin * TASKS,
                    cout * TASKS,
                    1,
                    conv.stride,
                    groups=groups if first else groups * TASKS,
                    bias=False,
                ),
                nn.BatchNorm2d(cout * TASKS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cout = self.conv.out_channels
        w = self.mixing.weights[:, self.index].repeat_interleave(cout, 0)  # (T * cout, 3)
        p_shared, p_own, p_skip = w.unbind(1)
        kernel = p_shared.view(-1, 1, 1, 1) * self.shared_w.repeat(TASKS, 1, 1, 1)
        kernel = torch.addcmul(kernel, p_own.view(-1, 1, 1, 1), self.own_w)
        gamma = torch.addcmul(p_shared * self.shared_g.repeat(TASKS), p_own, self.own_g)
        beta = torch.addcmul(p_shared * self.shared_b.repeat(TASKS), p_own, self.own_b)
        groups = self.conv.groups if self.first else self.conv.groups * TASKS
        y = F.conv2d(x, kernel, None, self.conv.stride, self.conv.padding, 1, groups)
        y = F.batch_norm(y, self.mean, self.var, gamma, beta, True, 0.1, 1e-5)
        if self.keeps:
            return torch.addcmul(y, p_skip.view(1, -1, 1, 1), x)
        if self.project is not None:
            return torch.addcmul(y, p_skip.view(1, -1, 1, 1), self.project(x))
        return y


def grouped_soft(model: nn.Module, projections: bool) -> tuple[nn.Module, Mixing]:
    """`model` (one copy) with every convolution and the BatchNorm after it made a
    `SoftUnit` for all tasks, and the `Mixing` its units read."""
    soft = copy.deepcopy(model)
    pairs: list[tuple[nn.Module, str, str]] = []

    def find(module: nn.Module) -> None:
        children = list(module.named_children())
        for (a, first), (b, second) in zip(children, children[1:]):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                pairs.append((module, a, b))
        for _, child in children:
            find(child)

    find(soft)
    mixing = Mixing(len(pairs))
    for i, (parent, a, b) in enumerate(pairs):
        conv, norm = getattr(parent, a), getattr(parent, b)
        setattr(parent, a, SoftUnit(conv, norm, i, mixing, i == 0, projections))
        setattr(parent, b, nn.Identity())
    return soft, mixing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--with-onnxmtl",
        action="store_true",
        help="also time onnxmtl's own steps (compile_search.make_step) in the same rounds",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    copies = [torchvision.models.mobilenet_v2().features.train() for _ in range(TASKS)]
    wide = grouped(copies).train()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.cat([c(x) for c in copies], dim=1)
        got = wide(x)
    error = float((got - expected).abs().max() / expected.abs().max())
    if error > 1e-4:
        sys.exit(f"the grouped network differs from the copies: relative error {error:.2e}")

    params, buffers = stack_module_state(copies)
    skeleton = copy.deepcopy(copies[0]).to("meta")

    def one(p: dict, b: dict, image: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, (p, b), (image,))

    def apart() -> None:
        for c in copies:
            c(x).square().mean().backward()

    def together() -> None:
        wide(x).square().mean().backward()

    def mapped() -> None:
        vmap(one, in_dims=(0, 0, None), randomness="different")(
            params, buffers, x
        ).square().mean().backward()

    with torch.no_grad():
        own_only = torch.cat([copies[0](x)] * TASKS, dim=1)
    soft_ways = {}
    for way, projections, _ in SOFT_WAYS:
        net, mixing = grouped_soft(copies[0], projections)
        net.train()
        # at p_own = 1 every task's unit is its own copy, here the first copy's weights
        mixing.weights = F.one_hot(torch.ones_like(mixing.logits[..., 0]).long(), 3).float()
        with torch.no_grad():
            soft_error = float((net(x) - own_only).abs().max() / own_only.abs().max())
        if soft_error > 1e-4:
            sys.exit(f"{way} at p_own = 1 differs from the copies: relative error {soft_error:.2e}")
        print(f"{way} at p_own = 1 vs the copy: relative error {soft_error:.1e}")

        def soft_step(net: nn.Module = net, mixing: Mixing = mixing) -> None:
            mixing.sample()
            net(x).square().mean().backward()

        soft_ways[way] = soft_step
    ways = {"apart": apart, "grouped": together, "vmap": mapped, **soft_ways}
    if args.with_onnxmtl:
        from benchmarks.compile_search import make_step

        for config in ("single", *(config for _, _, config in SOFT_WAYS)):
            ways[f"onnxmtl: {config}"] = make_step("mobilenet_v2", config)
    times = interleaved_times(ways, args.repeats, warmup=2)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"## {TASKS} copies of MobileNetV2's features, one training step, batch {BATCH}, "
        f"{SIZE}x{SIZE}, {args.threads} threads, torch {torch.__version__}\n"
    )
    print("| way | step ms | apart / way |")
    print("|---|---|---|")
    for way, seconds in med.items():
        print(f"| {way} | {seconds * 1000:.0f} | {med['apart'] / seconds:.2f}x |")
    print(f"\ngrouped output vs the copies': relative error {error:.1e}")
    if args.with_onnxmtl:
        single = med["onnxmtl: single"]
        for soft, _, config in SOFT_WAYS:
            now, best = med[f"onnxmtl: {config}"], single * med[soft] / med["apart"]
            print(
                f"onnxmtl: {config}: {now * 1000:.0f} ms now; task-stacked at best (three "
                f"single-task steps x {soft} / apart) {best * 1000:.0f} ms, "
                f"{best / single:.2f}x three single-task steps"
            )


if __name__ == "__main__":
    main()
