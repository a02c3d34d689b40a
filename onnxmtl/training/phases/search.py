"""`Search`: the weights and the policy logits trained in turn on two halves of the training
split (or together on one batch), then a policy derived from the logits."""

from __future__ import annotations

import json

import torch

from onnxmtl.compiler import BRANCHES, Policy
from onnxmtl.compiler.policy_cost import cost_regularizer, expected_cost
from onnxmtl.io_utils import atomic_write_text
from onnxmtl.training.attribution import (
    attribution_record,
    policy_gradients,
    regularizer_gradients,
)
from onnxmtl.training.checkpoint import Checkpointer
from onnxmtl.training.config import policy_lr_at, tau_at
from onnxmtl.training.conflict import conflict_policy
from onnxmtl.training.finite import check_weights
from onnxmtl.training.phases.phase import Optimizers, Phase
from onnxmtl.training.read_logits import policy_from_logits
from onnxmtl.training.regularizers import (
    conflict_weights,
    current_policy,
    depth_weights,
    sharing_regularizer,
)
from onnxmtl.training.selection import select_policy
from onnxmtl.training.session import Session


class Search(Phase):
    """Each of `search_steps` steps takes `weight_steps` SGD steps on the weights (batches of
    train1, the model sampling branches at the annealed temperature) and `policy_steps` Adam
    steps on the policy logits (batches of train2, with the sharing and cost regularisers);
    with `search_update: joint`, one SGD step on the weights and one Adam step on the logits
    from the same forward and backward pass on a batch of the training split. At the end the
    policy is derived (`derive`), fitted to the cost's hard budget, and with
    `post_train_init: backbone` the weights go back to the start (`checkpointer`'s)."""

    name = "search"
    title = "search"
    lr_option = "weight_lr"

    def __init__(self, run: Session, checkpointer: Checkpointer) -> None:
        super().__init__(run)
        self.checkpointer = checkpointer
        device = run.device
        self._sharing_weights: torch.Tensor | None = None
        cost = run.cost
        # the cost model's per-unit and skip costs and its ancestors matrix, on the device
        self.cost_tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        if cost is not None:
            ancestors = None if cost.ancestors is None else cost.ancestors.float().to(device)
            self.cost_tensors = (
                cost.unit.float().to(device),
                cost.skip.float().to(device),
                ancestors,
            )

    def length(self) -> int:
        return self.run.config.search.steps

    def make_optimizers(self) -> Optimizers:
        c, model = self.run.config.search, self.run.model
        weights = torch.optim.SGD(
            self.run.weights(), lr=c.weight_lr, momentum=0.9, weight_decay=c.weight_decay
        )
        policy = torch.optim.Adam(
            model.policy_parameters(), lr=c.policy_lr, weight_decay=c.policy_weight_decay
        )
        return Optimizers(weights, policy)

    def begin(self) -> None:
        """The phase's optimisers; the model's soft mode mixing as `soft_mix` says."""
        super().begin()
        self.run.model.soft_mix = self.run.config.search.mix

    def sharing_weights(self) -> torch.Tensor:
        """(units,): how hard the sharing regulariser pushes each unit towards sharing, by
        `sharing_prior` (the conflict ranking is final once warm-up has ended)."""
        if self._sharing_weights is None:
            run = self.run
            if run.config.search.sharing_prior == "conflict":
                weights = conflict_weights(run.conflict.ranking())
            else:
                depths = torch.tensor([u.depth for u in run.model.graph.units])
                weights = depth_weights(depths.float())
            self._sharing_weights = weights.to(run.device)
        return self._sharing_weights

    def blame(self, bad: list[str]) -> str:
        return "policy_lr" if bad == ["policy_loss"] else self.lr_option

    def step(self) -> dict[str, float]:
        run, c = self.run, self.run.config.search
        if c.update == "joint":
            record = self.joint_step(tau_at(c, run.policy_steps))
        else:
            record = self.alternate_steps()
        with torch.no_grad():
            probs = torch.softmax(run.model.masked_logits(), -1).mean((0, 1))
        record.update({f"p_{name}": float(p) for name, p in zip(BRANCHES, probs)})
        return record

    def alternate_steps(self) -> dict[str, float]:
        """`weight_steps` weight steps on train1, then `policy_steps` policy steps on train2."""
        run, c = self.run, self.run.config.search
        record: dict[str, float] = {}
        for _ in range(c.weight_steps):
            tau = tau_at(c, run.policy_steps)
            weights = self.optimizers.weights
            record.update(
                run.weight_step(weights, "train1", c.mode, tau, per_task=c.per_task_steps)
            )
        for _ in range(c.policy_steps):
            record.update(self.policy_step(tau_at(c, run.policy_steps)))
        return record

    def joint_step(self, tau: float) -> dict[str, float]:
        """One batch of the training split, the model sampling at temperature `tau`: the
        weight step's backward pass also gives the logits the task part of their Adam step
        (the regularisers' parts are added to it)."""
        run = self.run
        policy = self.optimizers.policy
        assert policy is not None  # make_optimizers gives the search one
        logits = run.model.policy_logits
        policy.zero_grad(set_to_none=True)
        scale = run.loss_scale()  # that of the backward pass: the weight step may change it
        record = run.weight_step(self.optimizers.weights, "train", run.config.search.mode, tau)
        task_grad = torch.zeros_like(logits) if logits.grad is None else logits.grad / scale
        terms, policy_record = self.regularizer_terms(record["loss"], tau)
        parts = {"task": task_grad, **regularizer_gradients(terms, logits)}
        return {**record, **policy_record, **self.step_policy(parts, tau)}

    def policy_terms(self, tau: float) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        """The policy loss on a train2 batch at temperature `tau`, in parts: the tasks' weighted
        losses, each weighted regulariser (sharing, and cost when configured) by name, and
        their log fields."""
        run, c = self.run, self.run.config.search
        images, targets = run.streams["train2"].next()
        task_losses = run.task_losses(images, targets, c.mode, tau)
        task_loss = run.weighting.static @ task_losses
        terms, record = self.regularizer_terms(float(task_loss.detach()), tau)
        return task_loss, terms, record

    def regularizer_terms(
        self, task_loss: float, tau: float
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """Each weighted regulariser of the policy (sharing, and cost when configured) by
        name, at temperature `tau`, and the log fields of the policy loss they make with
        `task_loss`."""
        run, c = self.run, self.run.config.search
        probs = torch.nn.functional.gumbel_softmax(run.model.masked_logits(), tau=tau, dim=-1)
        reg = sharing_regularizer(probs, self.sharing_weights(), c.sharing_scale)
        terms = {"sharing": c.sharing_weight * reg}
        record = {"sharing": float(reg.detach())}
        if run.cost is not None and run.config.cost.weight:
            assert self.cost_tensors is not None  # made in __init__ whenever there is a cost
            unit, skip, ancestors = self.cost_tensors
            current = current_policy(run.model.masked_logits())
            cost = cost_regularizer(current, unit, skip, run.cost.budget, ancestors, run.cost.base)
            terms["cost"] = run.config.cost.weight * cost
            record["cost"] = float(cost.detach())
            if run.cost.logged is not None:
                expected = expected_cost(current, unit, skip, ancestors)
                record[run.cost.logged] = run.cost.base + float(expected.detach())
        record["policy_loss"] = task_loss + sum(float(t.detach()) for t in terms.values())
        return terms, record

    def policy_step(self, tau: float) -> dict[str, float]:
        """One Adam step on the policy logits from a train2 batch."""
        run = self.run
        optimizer = self.optimizers.policy
        assert optimizer is not None  # make_optimizers gives the search one
        optimizer.zero_grad(set_to_none=True)
        task_loss, terms, record = self.policy_terms(tau)
        parts = policy_gradients(task_loss, terms, run.model.policy_logits, run.loss_scale())
        return {**record, **self.step_policy(parts, tau)}

    def step_policy(self, parts: dict[str, torch.Tensor], tau: float) -> dict[str, float]:
        """The Adam step on the logits with the sum of the gradient's `parts`, at this step's
        learning rate; logs how much of the gradient each part gives (`attribution_record`)."""
        run = self.run
        optimizer = self.optimizers.policy
        assert optimizer is not None  # make_optimizers gives the search one
        lr = policy_lr_at(run.config.search, run.policy_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = run.model.policy_logits
        logits.grad = run.precision.scaler.scale(sum(parts.values(), torch.zeros_like(logits)))
        run.optimizer_step(optimizer, run.model.policy_parameters())
        run.policy_steps += 1
        return {**attribution_record(parts), "tau": tau, "policy_lr": lr}

    def finish(self) -> None:
        """Derive the policy (none from logits that are not finite), fit it to the cost's
        budget, write policy.json and the cost's report, and make it the session's policy."""
        run, c = self.run, self.run.config
        check_weights(run.model, run.where(self.title, run.step))
        selection = None
        if c.search.derive == "conflict":
            policy = conflict_policy(run.model, run.conflict.ranking(), c.search.conflict_share)
        elif c.search.derive == "halving":
            argmax = policy_from_logits(run.model, "argmax")
            policy, selection = select_policy(run, argmax, self.within_budget)
        else:
            policy = policy_from_logits(run.model, c.search.derive, c.runtime.seed)
        searched = policy
        if run.cost is not None:
            policy = run.cost.fit(policy, run.model.masked_logits())
        run.policy = policy
        if run.main:
            policy.to_json(run.folder.policy)
            if selection is not None:
                atomic_write_text(run.folder.selection, json.dumps(selection.to_dict(), indent=1))
            if run.cost is not None:
                run.cost.write_report(run.folder.path, policy, searched)
        if c.post_train.init == "backbone":
            self.restore_initial_weights()

    def within_budget(self, policy: Policy) -> bool:
        """Whether the cost model puts `policy` within its budget (always, without one)."""
        run = self.run
        if run.cost is None or run.cost.budget is None or self.cost_tensors is None:
            return True
        unit, skip, ancestors = self.cost_tensors
        choices = torch.tensor(policy.choices, device=unit.device)
        onehot = torch.nn.functional.one_hot(choices, len(BRANCHES)).float()
        cost = cost_regularizer(onehot, unit, skip, run.cost.budget, ancestors, run.cost.base)
        return float(cost) <= 0

    def restore_initial_weights(self) -> None:
        """Every weight back to its value at the start (the backbone's, calibrated), keeping
        the learnt policy logits; the training batches then start over too, so the derived
        model sees the baselines' data in the baselines' order."""
        run = self.run
        self.checkpointer.restore_initial({"policy_logits": run.model.policy_logits.detach()})
        run.streams["train"].load_state_dict({"epoch": 0, "offset": 0})
