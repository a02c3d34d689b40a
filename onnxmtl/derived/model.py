"""`derive`: the compact multi-task model a policy implies, one forward for every task."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from onnxmtl.compiler.branches import ModuleT, one_row, run_for, weight_holder
from onnxmtl.compiler.plan import Ref, Step, set_frees
from onnxmtl.compiler.policy import BRANCHES, SHARED, SKIP, SPECIFIC, Policy
from onnxmtl.compiler.supermodel import PolicyLike, SuperModel, head_output
from onnxmtl.errors import ConfigError
from onnxmtl.tasks import Task


class DerivedModel(nn.Module):
    """A tree of operators: each unit exists once per group of tasks that took the same
    branch on the same value, skipped units are gone, unused branches are dropped.

    `sources` maps each kept module and weight to its name in the supermodel, so that the
    derived model can be saved as a slice of the supermodel's state.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        policy: Policy,
        steps: list[Step],
        outputs: list[list[int]],
        num_slots: int,
        modules: dict[str, nn.Module],
        weights: dict[str, torch.Tensor],
        heads: dict[str, nn.Module],
        sources: dict[str, str],
        input_shape: tuple = (),
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.policy = policy
        self.steps = steps
        self.outputs = outputs
        self.num_slots = num_slots
        self.blocks = nn.ModuleDict(modules)
        self.weights = weight_holder(weights)
        self.heads = nn.ModuleDict(heads)
        self.sources = sources
        self.input_shape = tuple(input_shape)  # the backbone's (N, C, H, W); dims may be names

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every task's output for the image batch `x`, keyed by task name."""
        vals = self.values(x)
        return {
            task.name: head_output(
                task, self.heads[task.name], tuple(_computed(vals, s) for s in slots), x
            )
            for task, slots in zip(self.tasks, self.outputs)
        }

    def values(self, x: torch.Tensor, keep: bool = False) -> list[torch.Tensor | None]:
        """The value of every slot for the image batch `x`; `keep` holds on to values that
        later steps no longer read (by default they are freed as soon as possible)."""
        vals: list[torch.Tensor | None] = [None] * self.num_slots
        vals[0] = x
        for step in self.steps:
            self.run_step(step, vals)
            if not keep:
                for slot in step.free:
                    vals[slot] = None
        return vals

    def run_step(
        self, step: Step, vals: list | dict, module: nn.Module | None = None
    ) -> torch.Tensor:
        """Run one step on the values in `vals` (by slot), storing its output there;
        `module` stands in for the step's own."""
        fn = (
            module
            if module is not None
            else self.blocks[step.module]
            if step.kind == "op"
            else step.function
        )
        if step.rows is not None:
            assert isinstance(fn, nn.Module)  # rows are set on runs of a shared unit branch
            run_for(fn, step.rows)
        args = [self._resolve(r, vals) for r in step.args]
        kwargs = {k: self._resolve(r, vals) for k, r in step.kwargs.items()}
        vals[step.out] = fn(*args, **kwargs)
        return vals[step.out]

    def _resolve(self, ref: Ref, vals: list | dict) -> object:
        if ref[0] == "s":
            return vals[ref[1]]
        if ref[0] == "w":
            return getattr(self.weights, ref[1])
        return ref[1]

    def one_module_per_run(self) -> DerivedModel:
        """A copy in which every run of a shared branch has a module of its own, holding the
        run's BatchNorm statistics as a plain BatchNorm: what export traces, so that each
        normalisation folds into its convolution as in any backbone."""
        model = copy.deepcopy(self)
        for i, step in enumerate(model.steps):
            if step.rows is None:
                continue
            name = f"{step.module}_run{i}"
            model.blocks[name] = one_row(copy.deepcopy(model.blocks[step.module]), step.rows[0])
            model.sources[name] = model.sources[step.module]
            step.target, step.rows = name, None
        used = {s.target for s in model.steps if s.kind == "op"}
        for name in [n for n in model.blocks if n not in used]:
            del model.blocks[name]
            del model.sources[name]
        return model

    def branch_counts(self) -> dict[str, int]:
        """How many unit branch instances one forward runs, by branch kind."""
        counts = dict.fromkeys(BRANCHES, 0)
        for step in self.steps:
            source = self.sources.get(step.module, "") if step.kind == "op" else ""
            if source.startswith("units."):
                counts[source.split(".")[2]] += 1
        return counts


def derive(
    model: SuperModel, policy: PolicyLike | None = None, tasks: Sequence[str] | None = None
) -> DerivedModel:
    """The multi-task model `policy` implies on `model` (default: the model's policy), for
    all its tasks or the named subset (a single-task model is `tasks=[name]`). Weights are
    copied, so training either model leaves the other alone."""
    policy = model.policy if policy is None else policy
    choices = model.choices_of(policy)
    names = model.task_names
    if tasks is None:
        keep = list(range(len(names)))
    else:
        unknown = [t for t in tasks if t not in names]
        if unknown or not tasks:
            raise ConfigError(
                f"cannot derive tasks {list(tasks)}: the supermodel has tasks {names}."
            )
        keep = [names.index(t) for t in tasks]
    unit_names = model.unit_names
    plan = model.plan

    steps: list[Step] = []
    sources: dict[str, str] = {}
    modules: dict[str, nn.Module] = {}
    weights: dict[str, torch.Tensor] = {}
    made: dict[tuple, Step] = {}
    symbol: list[list[int] | None] = [None] * plan.num_slots
    symbol[0] = [0] * len(keep)
    next_slot = 1

    def derived_slots(slot: int) -> list[int]:
        """The derived model's slot of plan slot `slot`, per kept task."""
        row = symbol[slot]
        assert row is not None, f"slot {slot} read after it was freed"
        return row

    def emit(key: tuple, step: Step) -> Step:
        nonlocal next_slot
        if key not in made:
            step.out = next_slot
            next_slot += 1
            steps.append(step)
            made[key] = step
        return made[key]

    for index, step in enumerate(plan.steps):
        out: list[int] = []
        for k, t in enumerate(keep):
            if step.kind == "unit":
                u = step.unit
                branch = choices[t][u]
                x = derived_slots(step.slots[0])[k]
                branches = model.unit_branches(u)
                if branch == SKIP and isinstance(branches.skip, nn.Identity):
                    out.append(x)
                    continue
                if branch == SPECIFIC:
                    name, source = f"unit{u}_{names[t]}", f"units.{u}.specific.{t}"
                    module = branches.specific[t]
                else:
                    label = BRANCHES[branch]
                    name, source = f"unit{u}_{label}", f"units.{u}.{label}"
                    shared_or_skip = branches.shared if branch == SHARED else branches.skip
                    assert shared_or_skip is not None  # choices_of allows skips only where present
                    module = shared_or_skip
                if name not in modules:
                    modules[name] = copy.deepcopy(module)
                    sources[name] = source
                rows: list[int] | None = None if branch == SPECIFIC else []
                run = emit((name, x), Step("op", name, [("s", x)], {}, -1, rows=rows))
                if run.rows is not None:
                    run.rows.append(t)  # the run's statistics are its tasks'
                out.append(run.out)
            else:
                key = (index, tuple(derived_slots(s)[k] for s in step.slots))
                target = step.target
                if step.kind == "op":
                    target = f"op_{step.module}"
                    if target not in modules:
                        modules[target] = copy.deepcopy(model.ops[step.module])
                        sources[target] = f"ops.{step.module}"
                args = [_translate(r, symbol, k) for r in step.args]
                kwargs = {n: _translate(r, symbol, k) for n, r in step.kwargs.items()}
                out.append(emit(key, Step(step.kind, target, args, kwargs, -1)).out)
                for value in step.weights:
                    if value not in weights:
                        weights[value] = getattr(model.weights, value)
                        sources[f"weight:{value}"] = f"weights.{value}"
        symbol[step.out] = out
        for slot in step.free:
            symbol[slot] = None
    outputs = [[derived_slots(s)[k] for s in plan.outputs] for k in range(len(keep))]
    steps = _live(steps, outputs)
    set_frees(steps, [s for row in outputs for s in row])
    used = {s.target for s in steps if s.kind == "op"}
    modules = {n: m for n, m in modules.items() if n in used}
    read = {v for s in steps for v in s.weights}
    weights = {n: w for n, w in weights.items() if n in read}
    sources = {
        n: s for n, s in sources.items() if n in modules or n.removeprefix("weight:") in weights
    }
    kept = [model.tasks[t] for t in keep]
    heads = {t.name: copy.deepcopy(model.heads[t.name]) for t in kept}
    sources.update({f"head:{t.name}": f"heads.{t.name}" for t in kept})
    derived_policy = Policy(
        [t.name for t in kept],
        unit_names,
        [list(choices[t]) for t in keep],
        method=policy.method if isinstance(policy, Policy) else "given",
        seed=policy.seed if isinstance(policy, Policy) else None,
    )
    return DerivedModel(
        kept,
        derived_policy,
        steps,
        outputs,
        next_slot,
        modules,
        weights,
        heads,
        sources,
        model.graph.input_shape,
    )


def _translate(ref: Ref, symbol: list, k: int) -> Ref:
    return ("s", symbol[ref[1]][k]) if ref[0] == "s" else ref


def _computed(vals: list[torch.Tensor | None], slot: int) -> torch.Tensor:
    """The value of an output slot (never freed)."""
    value = vals[slot]
    assert value is not None, f"output slot {slot} was freed"
    return value


def _live(steps: list[Step], outputs: list[list[int]]) -> list[Step]:
    """The steps some task output depends on, in order."""
    needed = {s for row in outputs for s in row}
    kept = []
    for step in reversed(steps):
        if step.out in needed:
            kept.append(step)
            needed.update(step.slots)
    return kept[::-1]


def perturb_weights(module: ModuleT, scale: float = 1e-3, seed: int = 0) -> ModuleT:
    """Scale every parameter by 1 + `scale` * noise, in place: task copies then differ as
    trained ones do, where identical copies would be merged by onnxruntime's
    common-subexpression elimination (for timing untrained models)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=gen).to(p))
    return module
