"""`SuperModel`: the backbone with three branches per unit, task heads and policy logits."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import functional_call

from onnxmtl.choices import SOFT_MIXES
from onnxmtl.compiler.backbone import output_values, unit_index
from onnxmtl.compiler.branches import Renorm, UnitBranches, UnitOps, weight_holder
from onnxmtl.compiler.head_output import head_output
from onnxmtl.compiler.interpreted import Gate, Values, for_task, last_uses, size_mismatch
from onnxmtl.compiler.mixing import mixed_parameters
from onnxmtl.compiler.policy import BRANCHES, SHARED, SKIP, SPECIFIC, Policy, checked_choices
from onnxmtl.errors import ConfigError
from onnxmtl.ir import Graph
from onnxmtl.tasks import Task

MODES = ("warmup", "soft", "hard", "fixed")
Choices = list[list[int]]
PolicyLike = Policy | Choices | torch.Tensor


class SuperModel(nn.Module):
    """Runs every task in one call by interpreting `backbone`, the lowered graph in which each
    unit is one node: a unit node dispatches to the unit's branches, any other node runs as in
    the backbone. Values are computed once per distinct input: a node, or a unit branch that
    tasks share on the same input, runs once for all of them.

    Modes: 'warmup' averages the available branches; 'soft' weighs them with Gumbel-softmax
    samples at temperature `tau`, mixing, in training, their parameters (`soft_mix`
    'parameters', the default; see `mixing`: each unit's operators run once per task) or
    their outputs ('outputs', AutoMTL's; always in eval mode);
    'hard' runs one sampled branch per (task, unit), with straight-through gradients to the
    logits; 'fixed' follows `policy`.
    In 'hard' mode, tasks that sampled the same shared or skip branch on the same input share
    one gate, so each of their logits receives the gradient of the group's summed loss.
    """

    branch_mask: torch.Tensor  # a buffer: (units, branches), True where available

    def __init__(
        self,
        graph: Graph,
        tasks: Sequence[Task],
        backbone: fx.Graph,
        ops: dict[str, nn.Module],
        weights: dict[str, torch.Tensor],
        units: Sequence[UnitBranches],
        heads: dict[str, nn.Module],
        branch_mask: torch.Tensor,
        options: dict,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.tasks = list(tasks)
        self.options = dict(options)
        self.backbone = backbone
        self._index_backbone()
        self.ops = nn.ModuleDict(ops)
        self.weights = weight_holder(weights)
        self.units = nn.ModuleList(units)
        self.heads = nn.ModuleDict(heads)
        self.policy_logits = nn.Parameter(torch.zeros(len(self.tasks), len(units), 3))
        self.register_buffer("branch_mask", branch_mask)
        self._allowed: list[list[bool]] = branch_mask.tolist()  # host copy: no device syncs
        self.mode = "warmup"
        self.tau = 5.0
        self._soft_mix = "parameters"
        self._policy: Policy | None = None
        self.set_policy(self.uniform_policy(SHARED))
        self.last_choices: Choices | None = None
        self.calibration = "none"

    def _index_backbone(self) -> None:
        """The tables the forward pass reads, keyed by the backbone's nodes."""
        self._last_uses = last_uses(self.backbone)
        self._fetch: dict[fx.Node, Callable[[nn.Module], object]] = {
            n: attrgetter(n.target)
            for n in self.backbone.nodes
            if n.op in ("get_attr", "call_module")
        }

    def __deepcopy__(self, memo: dict[int, Any]) -> SuperModel:
        # fx.Graph's own copy makes new nodes without entering them in `memo`, so the
        # node-keyed tables are rebuilt for the copy rather than copied
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for name, value in self.__dict__.items():
            if name not in ("_last_uses", "_fetch"):
                copied.__dict__[name] = copy.deepcopy(value, memo)
        copied._index_backbone()
        return copied

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def unit_names(self) -> list[str]:
        return [u.name for u in self.graph.units]

    def backbone_code(self) -> str:
        """The backbone graph as Python code: each unit is one call of `units.<index>`, which
        runs the branches the mode or the policy picks for each task."""
        return self.backbone.python_code("self").src

    def unit_branches(self, u: int) -> UnitBranches:
        """The branches of unit `u` (`units[u]`, typed)."""
        unit = self.units[u]
        assert isinstance(unit, UnitBranches)
        return unit

    @property
    def soft_mix(self) -> str:
        """What 'soft' mode mixes in training: the branches' 'parameters' (the default) or
        their 'outputs' (see `mixing`)."""
        return self._soft_mix

    @soft_mix.setter
    def soft_mix(self, value: str) -> None:
        if value not in SOFT_MIXES:
            raise ConfigError(
                f"unknown soft_mix {value!r}; expected one of {', '.join(SOFT_MIXES)}."
            )
        self._soft_mix = value

    @property
    def policy(self) -> Policy | None:
        """The policy 'fixed' mode follows when given none: all shared for a freshly compiled
        supermodel, the trained one after `Trainer.run` and in a saved supermodel; None for a
        supermodel saved before the policy was saved with it."""
        return self._policy

    def set_policy(self, policy: Policy | None) -> None:
        """Make `policy` (checked against this supermodel) the one the model carries and saves;
        the only place it changes."""
        if policy is not None:
            self.choices_of(policy)
        self._policy = policy

    def uniform_policy(self, branch: int) -> Policy:
        """Every task takes `branch` at every unit (SKIP falls back to SHARED where a unit has
        no skip)."""
        choices = [
            [branch if self._allowed[u][branch] else SHARED for u in range(len(self.units))]
            for _ in self.tasks
        ]
        return Policy(self.task_names, self.unit_names, choices, method=BRANCHES[branch])

    def policy_parameters(self) -> list[nn.Parameter]:
        return [self.policy_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "policy_logits"]

    def masked_logits(self) -> torch.Tensor:
        """Policy logits with unavailable branches at -inf."""
        return self.policy_logits.masked_fill(~self.branch_mask, float("-inf"))

    def forward(
        self,
        x: torch.Tensor,
        mode: str | None = None,
        tau: float | None = None,
        policy: PolicyLike | None = None,
        tasks: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every task's output for the image batch `x`, keyed by task name; in 'fixed' mode,
        the outputs of the tasks indexed by `tasks` only where given (see `features`)."""
        features = self.features(x, mode, tau, policy, tasks)
        run = self.tasks if tasks is None else [self.tasks[t] for t in tasks]
        return {
            task.name: head_output(task, self.heads[task.name], feats, x)
            for task, feats in zip(run, features)
        }

    def features(
        self,
        x: torch.Tensor,
        mode: str | None = None,
        tau: float | None = None,
        policy: PolicyLike | None = None,
        tasks: Sequence[int] | None = None,
    ) -> list[tuple[torch.Tensor, ...]]:
        """Per task, the backbone's feature value(s) under the given mode; in 'fixed' mode,
        for the tasks indexed by `tasks` only where given (a shared branch then uses their
        statistics only)."""
        mode = mode or self.mode
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}.")
        if tasks is not None and mode != "fixed":
            raise ConfigError(f"a subset of the tasks runs in 'fixed' mode only, not {mode!r}.")
        tau = self.tau if tau is None else tau
        probs = delta = None
        choices: Choices | None = None
        if mode == "fixed":
            choices = self.choices_of(self.policy if policy is None else policy)
        elif mode == "warmup":
            probs = self.branch_mask.float() / self.branch_mask.sum(-1, keepdim=True)
            probs = probs.expand(len(self.tasks), -1, -1)
        else:
            if tau <= 0:
                raise ConfigError(f"tau must be > 0, got {tau}.")
            probs = F.gumbel_softmax(self.masked_logits(), tau=tau, hard=False, dim=-1)
            if mode == "hard":
                index = probs.argmax(-1, keepdim=True)
                choices = index.squeeze(-1).tolist()
                if torch.is_grad_enabled() and probs.requires_grad:
                    chosen = probs.gather(-1, index).squeeze(-1)
                    delta = chosen - chosen.detach()  # (tasks, units), value 0
                probs = None
        self.last_choices = choices
        by_parameters = mode == "soft" and self.soft_mix == "parameters" and self.training
        run = list(range(len(self.tasks)) if tasks is None else tasks)
        try:
            return self._interpret(x, probs, choices, delta, by_parameters, run)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            size_mismatch(self.graph, x, exc)
            raise

    def _interpret(
        self,
        x: torch.Tensor,
        probs: torch.Tensor | None,
        choices: Choices | None,
        delta: torch.Tensor | None,
        by_parameters: bool,
        tasks: list[int],
    ) -> list[tuple[torch.Tensor, ...]]:
        """Per task of `tasks` (every task where `probs` mixes), the backbone's outputs: unit
        nodes mixed by `probs` (their outputs, or `by_parameters`) or choosing by `choices`;
        every other node run once per distinct tuple of inputs."""
        mix = self._mix_parameters if by_parameters else self._mix
        num_tasks = len(tasks)
        vals: Values = {}
        for node in self.backbone.nodes:
            if node.op == "placeholder":
                vals[node] = [x] * num_tasks
            elif node.op == "get_attr":
                vals[node] = [self._fetch[node](self)] * num_tasks  # type: ignore[list-item]
            elif node.op == "output":
                results = output_values(node)
                return [tuple(vals[r][t] for r in results) for t in range(num_tasks)]
            else:
                u = unit_index(node)
                if u is None:
                    vals[node] = self._run_node(node, vals, num_tasks)
                elif probs is not None:
                    vals[node] = mix(u, vals[node.all_input_nodes[0]], probs)
                else:
                    assert choices is not None  # 'fixed' and 'hard' modes choose branches
                    xs = vals[node.all_input_nodes[0]]
                    vals[node] = self._select(u, xs, choices, delta, tasks)
            for done in self._last_uses[node]:
                del vals[done]
        raise AssertionError("the backbone graph has no output node")

    def _run_node(self, node: fx.Node, vals: Values, num_tasks: int) -> list[torch.Tensor]:
        fn = self._fetch[node](self) if node.op == "call_module" else node.target
        assert callable(fn)
        inputs = node.all_input_nodes
        cache: dict[tuple[int, ...], torch.Tensor] = {}
        out = []
        for t in range(num_tasks):
            key = tuple(id(vals[n][t]) for n in inputs)
            if key not in cache:
                args, kwargs = for_task(node.args, vals, t), for_task(node.kwargs, vals, t)
                cache[key] = fn(*args, **kwargs)
            out.append(cache[key])
        return out

    def _branch(self, u: int, branch: int, tasks: list[int], x: torch.Tensor) -> torch.Tensor:
        """Branch `branch` of unit `u` run once on `x` for `tasks` (whose statistics its
        normalisations use)."""
        unit = self.unit_branches(u)
        if branch == SPECIFIC:
            return unit.specific[tasks[0]](x)
        module = unit.shared if branch == SHARED else unit.skip
        if module is None:
            raise ConfigError(f"unit '{self.unit_names[u]}' has no skip branch.")
        return module(x) if isinstance(module, nn.Identity) else module(x, rows=tuple(tasks))

    def _select(
        self,
        u: int,
        xs: list[torch.Tensor],
        choices: Choices,
        delta: torch.Tensor | None,
        tasks: list[int],
    ) -> list[torch.Tensor]:
        """Unit `u`'s output for each of `tasks` (reading `xs`, in the same order): one run
        of a branch for every group of tasks that chose it on the same input."""
        groups: dict[tuple[int, int], list[int]] = {}  # (branch, task or input) -> positions
        for k, (t, x) in enumerate(zip(tasks, xs)):
            b = choices[t][u]
            groups.setdefault((b, t if b == SPECIFIC else id(x)), []).append(k)
        out: dict[int, torch.Tensor] = {}
        for (b, _), members in groups.items():
            rows = [tasks[k] for k in members]
            y = self._branch(u, b, rows, xs[members[0]])
            if delta is not None:
                y = Gate.apply(y, sum(delta[t, u] for t in rows))
            for k in members:
                out[k] = y
        return [out[k] for k in range(len(xs))]

    def _per_input(self, u: int, branch: int, xs: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Branch `branch` of unit `u` run once on each distinct input in `xs` (for the tasks
        that read it), keyed by the input's id."""
        readers: dict[int, list[int]] = {}
        for t, x in enumerate(xs):
            readers.setdefault(id(x), []).append(t)
        return {key: self._branch(u, branch, tasks, xs[tasks[0]]) for key, tasks in readers.items()}

    def _mix(self, u: int, xs: list[torch.Tensor], probs: torch.Tensor) -> list[torch.Tensor]:
        unit = self.unit_branches(u)
        has_skip = self._allowed[u][SKIP]
        shared = self._per_input(u, SHARED, xs)
        skipped = self._per_input(u, SKIP, xs) if has_skip else {}
        out = []
        for t, x in enumerate(xs):
            w = probs[t, u]
            y = w[SHARED] * shared[id(x)] + w[SPECIFIC] * unit.specific[t](x)
            if has_skip:
                y = y + w[SKIP] * skipped[id(x)]
            out.append(y)
        return out

    def _mix_parameters(
        self, u: int, xs: list[torch.Tensor], probs: torch.Tensor
    ) -> list[torch.Tensor]:
        """Each task's copy of unit `u` run once on its input with its and the shared
        branch's parameters mixed by its weights in `probs` (see `mixing`), plus the skip,
        run once per distinct input and weighted."""
        unit = self.unit_branches(u)
        shared = dict(unit.shared.named_parameters())
        has_skip = self._allowed[u][SKIP]
        skipped = self._per_input(u, SKIP, xs) if has_skip else {}
        out = []
        for t, (x, row) in enumerate(zip(xs, probs[:, u].unbind(0))):
            w = row.unbind(0)
            own = unit.specific[t]
            own_params = dict(own.named_parameters())
            params = mixed_parameters(shared, own_params, (w[SHARED], w[SPECIFIC]))
            y = functional_call(own, params, (x,))
            if has_skip:
                y = torch.addcmul(y, w[SKIP], skipped[id(x)])
            out.append(y)
        return out

    def choices_of(self, policy: PolicyLike | None) -> Choices:
        """A policy's branch choices (tasks x units), checked against this supermodel (see
        `checked_choices`)."""
        if policy is not None and not isinstance(policy, Policy):
            policy = torch.as_tensor(policy).tolist()
        skips = [allowed[SKIP] for allowed in self._allowed]
        return checked_choices(policy, self.task_names, self.unit_names, skips)

    def renorms(self) -> list[tuple[int, Renorm]]:
        """(unit index, Renorm) of the shared branch of every re-normalised unit."""
        found = ((i, self.unit_branches(i).shared.renorm) for i in range(len(self.units)))
        return [(i, r) for i, r in found if r is not None]

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor) -> None:
        """Initialise every re-inserted normalisation from `images` so that each unit computes
        what the backbone computes; task copies receive the same statistics. Call it before
        training."""
        renorms = self.renorms()
        if not renorms:
            return
        was_training = self.training
        self.eval()
        for _, r in renorms:
            r.calibrating = True
        try:
            self.features(images, mode="fixed", policy=self.uniform_policy(SHARED))
        finally:
            for _, r in renorms:
                r.calibrating = False
            self.train(was_training)
        for u, r in renorms:
            for branch in self.unit_branches(u).specific:
                assert isinstance(branch, UnitOps) and branch.renorm is not None  # copies of shared
                branch.renorm.copy_from(r, 0)
        self.calibration = "data"
