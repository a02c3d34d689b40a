"""The search: warm-up -> policy search -> derive -> post-train, checkpointed and resumable."""

from __future__ import annotations

import csv
import json
import math
import pickle
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from onnxmtl.compiler import BRANCHES, Policy, SuperModel
from onnxmtl.data import MultiTaskDataset, split_indices
from onnxmtl.errors import ConfigError, RunFolderError, TrainingError
from onnxmtl.io_utils import atomic_save, atomic_write_text
from onnxmtl.run_folder import RunFolder
from onnxmtl.tasks import loss_fn
from onnxmtl.training import distributed
from onnxmtl.training.attribution import attribution_record, policy_gradients
from onnxmtl.training.batchnorm import recompute_batchnorm
from onnxmtl.training.config import SearchConfig, policy_lr_at, tau_at
from onnxmtl.training.conflict import ConflictMeter, conflict_policy, init_from_conflict
from onnxmtl.training.cost_model import CostModel
from onnxmtl.training.evaluate import evaluate, fit_input, fit_output
from onnxmtl.training.precision import Precision
from onnxmtl.training.regularizers import (
    cost_regularizer,
    current_policy,
    expected_cost,
    sharing_regularizer,
)
from onnxmtl.training.stream import BatchStream
from onnxmtl.training.weighting import make_weighting

PHASES = ("warmup", "search", "post", "done")


@dataclass
class SearchResult:
    """What a finished run gives: the policy, the final metrics and where the files are."""

    policy: Policy
    metrics: dict[str, dict[str, dict[str, float]]]  # split -> task -> metric -> value
    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)


def derive_policy(model: SuperModel, method: str = "argmax", seed: int = 0) -> Policy:
    """One branch per (task, unit) from the policy logits: the most likely one, or a sample
    from their softmax with a recorded seed."""
    logits = model.masked_logits().detach().cpu()
    if method == "argmax":
        choices = logits.argmax(-1)
    elif method == "sample":
        gen = torch.Generator().manual_seed(seed)
        probs = torch.softmax(logits, -1)
        choices = torch.multinomial(probs.view(-1, 3), 1, generator=gen).view(probs.shape[:2])
    else:
        raise ConfigError(f"derive must be 'argmax' or 'sample', got {method!r}.")
    return Policy(
        model.task_names,
        model.unit_names,
        choices.tolist(),
        method=method,
        seed=seed if method == "sample" else None,
        logits=model.policy_logits.detach().cpu().tolist(),
    )


PHASE_NAMES = {"warmup": "warm-up", "search": "search", "post": "post-train"}


class Trainer:
    """Runs the phases of `config` on `model`, writing checkpoints, metrics and the policy to
    `run_dir`. `fixed_policy` skips warm-up and search and post-trains that policy (the
    baselines: all-shared, single-task, random). `cost` is the cost model of `config.cost`
    for the search's cost regulariser (`onnxmtl.cost.make_cost` builds it); a fixed policy
    needs none.

    Under torchrun every process takes its share of each batch (`batch_size` is the global
    batch) and the gradients are averaged with one all-reduce per step; all processes draw the
    same Gumbel samples (same seed), so they run the same branches and keep the same weights
    and policy logits. (DistributedDataParallel is not used: it gives unused branches zero
    gradients, which Adam would still step, where a single process leaves them alone.) Only
    rank 0 writes files."""

    def __init__(
        self,
        model: SuperModel,
        train: MultiTaskDataset,
        config: SearchConfig,
        run_dir: str | Path,
        test: MultiTaskDataset | None = None,
        fixed_policy: Policy | None = None,
        progress: bool = True,
        label: str = "",
        cost: CostModel | None = None,
    ) -> None:
        self.model, self.train_set, self.test_set = model, train, test
        self.label = label  # prefixes the progress bars' phase names
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.folder = RunFolder(self.run_dir)
        self.tasks = model.tasks
        self.device = distributed.local_device(torch.device(config.device))
        self.rank, self.world = distributed.setup(self.device)
        self.main = self.rank == 0
        if config.batch_size % self.world:
            raise ConfigError(
                f"batch_size {config.batch_size} is the global batch and must divide evenly "
                f"over the {self.world} processes."
            )
        model.to(self.device)
        self.splits = split_indices(
            len(train), config.seed, config.val_fraction, train.val_indices()
        )
        self.streams = {name: self._stream(name, name) for name in ("train", "train1", "train2")}
        self.weighting = make_weighting(
            config.weighting, self.tasks, config.dwa_temperature, config.dwa_window
        )
        self.fixed = fixed_policy is not None
        self.policy = fixed_policy  # the policy post-training trains: fixed, or derived
        self.phase = "post" if self.fixed else "warmup"
        self.step = 0  # within the phase
        self.policy_steps = 0
        self.history: list[dict[str, Any]] = []
        self.depths = torch.tensor(
            [u.depth for u in model.graph.units], dtype=torch.float32, device=self.device
        )
        self.precision = Precision(config.precision, self.device)
        self.conflict = ConflictMeter(model, config.conflict_threshold)
        self.cost = None if self.fixed else cost
        if not self.fixed and bool(config.cost) != (cost is not None):
            raise ConfigError(
                f"config: cost={config.cost!r}, but the trainer was given "
                f"{'no' if cost is None else 'a'} cost model; build it from the config with "
                "onnxmtl.cost.make_cost(model, config)."
            )
        self.cost_tensors = None if self.cost is None else self._on_device(self.cost)
        self.weighting.to(self.device)
        self._make_optimizers()

    def _on_device(self, cost: CostModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The cost model's (unit, skip, ancestors) tensors as float32 on the trainer's device."""
        ancestors = None if cost.ancestors is None else cost.ancestors.float().to(self.device)
        return cost.unit.float().to(self.device), cost.skip.float().to(self.device), ancestors

    # -- optimisers -------------------------------------------------------------------------
    def _weights(self) -> list[torch.nn.Parameter]:
        return self.model.weight_parameters() + list(self.weighting.parameters())

    def _make_optimizers(self) -> None:
        c = self.config
        if self.phase == "warmup":
            self.opt = torch.optim.Adam(self._weights(), lr=c.warmup_lr)
            self.policy_opt = None
        elif self.phase == "search":
            self.opt = torch.optim.SGD(
                self._weights(), lr=c.weight_lr, momentum=0.9, weight_decay=c.weight_decay
            )
            self.policy_opt = torch.optim.Adam(
                self.model.policy_parameters(), lr=c.policy_lr, weight_decay=c.policy_weight_decay
            )
        else:
            self.opt = torch.optim.Adam(self._weights(), lr=c.post_train_lr)
            self.policy_opt = None
        self.scheduler = (
            torch.optim.lr_scheduler.StepLR(self.opt, c.post_train_lr_step, gamma=0.5)
            if self.phase == "post"
            else None
        )

    # -- one step ---------------------------------------------------------------------------
    def _task_losses(self, images, targets, mode: str, tau: float | None = None) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        targets = {k: v.to(self.device, non_blocking=True) for k, v in targets.items()}
        with self.precision.autocast():
            out = self.model(fit_input(images, self.model), mode=mode, tau=tau, policy=self.policy)
            losses = [
                loss_fn(t)(fit_output(out[t.name], targets[t.name], t), targets[t.name])
                for t in self.tasks
            ]
        return torch.stack(losses).float()

    def _weight_step(self, stream: str, mode: str, tau: float | None) -> dict[str, float]:
        images, targets = self.streams[stream].next()
        self.opt.zero_grad(set_to_none=True)
        if self.config.per_task_steps and self.phase == "search":
            losses = []
            for t in range(len(self.tasks)):
                self.opt.zero_grad(set_to_none=True)
                task_losses = self._task_losses(images, targets, mode, tau)
                self.precision.backward(self.weighting.static[t] * task_losses[t])
                self._step(self.opt, self._weights())
                losses.append(task_losses[t].detach())
            task_losses = torch.stack(losses)
            total = float(task_losses.sum())
        else:
            task_losses = self._task_losses(images, targets, mode, tau)
            if self._measures_conflict():
                self.conflict.measure(task_losses, self._loss_scale())
            loss = self.weighting(task_losses)
            self.precision.backward(loss)
            self._step(self.opt, self._weights())
            total = float(loss.detach())
        if self.scheduler is not None:
            self.scheduler.step()
        record = {"loss": total}
        record.update(
            {f"loss_{t.name}": float(v) for t, v in zip(self.tasks, task_losses.detach())}
        )
        return record

    def _measures_conflict(self) -> bool:
        every = self.config.conflict_every
        return self.phase == "warmup" and every > 0 and (self.step + 1) % every == 0

    def _loss_scale(self) -> float:
        """The gradient scaler's scale (1 unless fp16)."""
        scaler = self.precision.scaler
        return scaler.get_scale() if scaler.is_enabled() else 1.0

    def _policy_terms(self, tau: float) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        """The policy loss on a train2 batch at temperature `tau`, in parts: the tasks' weighted
        losses, each weighted regulariser (sharing, and cost when configured) by name, and
        their log fields."""
        c = self.config
        images, targets = self.streams["train2"].next()
        task_losses = self._task_losses(images, targets, c.search_mode, tau)
        task_loss = self.weighting.static @ task_losses
        probs = torch.nn.functional.gumbel_softmax(self.model.masked_logits(), tau=tau, dim=-1)
        reg = sharing_regularizer(probs, self.depths, c.sharing_scale)
        terms = {"sharing": c.sharing_weight * reg}
        record = {"sharing": float(reg.detach())}
        if self.cost is not None and c.cost_weight:
            unit, skip, ancestors = self.cost_tensors
            current = current_policy(self.model.masked_logits())
            cost = cost_regularizer(
                current, unit, skip, self.cost.budget, ancestors, self.cost.base
            )
            terms["cost"] = c.cost_weight * cost
            record["cost"] = float(cost.detach())
            if self.cost.logged is not None:
                expected = expected_cost(current, unit, skip, ancestors)
                record[self.cost.logged] = self.cost.base + float(expected.detach())
        record["policy_loss"] = float((task_loss + sum(terms.values())).detach())
        return task_loss, terms, record

    def _policy_step(self, tau: float) -> dict[str, float]:
        """One Adam step on the policy logits at this step's learning rate; logs the loss's
        parts and how much of the logits' gradient each gives (`attribution_record`)."""
        lr = policy_lr_at(self.config, self.policy_steps)
        for group in self.policy_opt.param_groups:
            group["lr"] = lr
        self.policy_opt.zero_grad(set_to_none=True)
        task_loss, terms, record = self._policy_terms(tau)
        logits = self.model.policy_logits
        parts = policy_gradients(task_loss, terms, logits, self._loss_scale())
        logits.grad = self.precision.scaler.scale(sum(parts.values()))
        self._step(self.policy_opt, self.model.policy_parameters())
        self.policy_steps += 1
        return {**record, **attribution_record(parts), "tau": tau, "policy_lr": lr}

    def _step(self, optimizer: torch.optim.Optimizer, params: list) -> None:
        """One optimiser step on gradients averaged over the processes (under torchrun)."""
        distributed.average_gradients(params)
        self.precision.step(optimizer)
        distributed.average_buffers(self.model)

    # -- phases -----------------------------------------------------------------------------
    def _phase_length(self) -> int:
        c = self.config
        return {"warmup": c.warmup_steps, "search": c.search_steps, "post": c.post_train_steps}[
            self.phase
        ]

    def _run_step(self) -> dict[str, float]:
        c = self.config
        if self.phase == "warmup":
            return self._weight_step("train", "warmup", None)
        if self.phase == "search":
            record: dict[str, float] = {}
            for _ in range(c.weight_steps):
                record.update(
                    self._weight_step("train1", c.search_mode, tau_at(c, self.policy_steps))
                )
            for _ in range(c.policy_steps):
                record.update(self._policy_step(tau_at(c, self.policy_steps)))
            with torch.no_grad():
                probs = torch.softmax(self.model.masked_logits(), -1).mean((0, 1))
            record.update({f"p_{name}": float(p) for name, p in zip(BRANCHES, probs)})
            return record
        return self._weight_step("train", "fixed", None)

    def _check_finite(self, record: dict[str, float]) -> None:
        """Stop at the first loss that is not finite, before anything is saved (the last
        checkpoint, from before it, stays the run's last good state)."""
        keys = [*(f"loss_{t.name}" for t in self.tasks), "loss", "policy_loss"]
        bad = [k for k in keys if k in record and not math.isfinite(record[k])]
        if not bad:
            return
        tasks = [k.removeprefix("loss_") for k in bad if k.startswith("loss_")]
        what = f"task {', '.join(repr(t) for t in tasks)}" if tasks else f"the {bad[0]}"
        lr = {
            "warmup": "warmup_lr",
            "search": "policy_lr" if bad == ["policy_loss"] else "weight_lr",
            "post": "post_train_lr",
        }[self.phase]
        raise TrainingError(
            f"{self.run_dir}: {PHASE_NAMES[self.phase]} step {self.step + 1}: the loss of "
            f"{what} is {record[bad[0]]} (not finite); likely causes: NaN/inf or out-of-range "
            f"values in the data, or {lr}={getattr(self.config, lr):g} too high. Nothing was "
            "saved from this step; the last checkpoint is the last good state."
        )

    def _check_weights(self) -> None:
        """Refuse to save weights or policy logits that are not finite."""
        for name, value in self.model.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise TrainingError(
                    f"{self.run_dir}: {PHASE_NAMES.get(self.phase, self.phase)} step "
                    f"{self.step}: {name} holds NaN/inf values; not saved (the last checkpoint "
                    "is the last good state). Lower the learning rates or check the data."
                )

    def _finish_phase(self) -> None:
        c = self.config
        if self.phase == "warmup" and self.conflict.measurements:
            if self.main:
                self.conflict.to_json(self.folder.conflict)
            if c.conflict_init:
                init_from_conflict(self.model, self.conflict.scores(), c.conflict_strength)
        if self.phase == "search":
            self._check_weights()  # no policy from NaN logits
            if c.derive == "conflict":
                policy = conflict_policy(self.model, self.conflict.ranking(), c.conflict_share)
            else:
                policy = derive_policy(self.model, c.derive, c.seed)
            searched = policy
            if self.cost is not None:
                policy = self.cost.fit(policy, self.model.masked_logits())
            self.policy = policy
            if self.main:
                policy.to_json(self.folder.policy)
                if self.cost is not None:
                    self.cost.write_report(self.run_dir, policy, searched)
            if c.post_train_init == "backbone":
                self._restore_initial_weights()
        if self.phase == "post" and c.batchnorm_batches:
            self._recompute_batchnorm()
        self.phase = PHASES[PHASES.index(self.phase) + 1]
        self.step = 0
        if self.phase != "done":
            self._make_optimizers()

    def run(self, resume: bool = False, stop_after: int | None = None) -> SearchResult | None:
        """Run (or resume) to the end; `stop_after` N steps returns None early (for tests
        and for splitting work), leaving a checkpoint to resume from."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.folder.checkpoint.exists():
            self._load()
        else:
            self._start()
        done = 0
        while self.phase != "done":
            length = self._phase_length()
            bar = self._bar(
                length, "train" if self.fixed else PHASE_NAMES[self.phase], initial=self.step
            )
            self.model.train()
            while self.step < length:
                if stop_after is not None and done >= stop_after:
                    bar.close()
                    self._save()
                    return None
                record = self._run_step()
                if self.world > 1:
                    record = dict(zip(record, distributed.mean(list(record.values()), self.device)))
                self._check_finite(record)
                self.step += 1
                done += 1
                self._log(record)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k in ("loss", "tau")})
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                    self._save()
            bar.close()
            self._finish_phase()
            self._save()
        return self._final()

    def _start(self) -> None:
        seed = self.config.seed
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        if self.main:
            atomic_write_text(self.folder.config, json.dumps(self.config.to_dict(), indent=1))
            for results in (self.folder.metrics, *self.folder.logs):
                results.unlink(missing_ok=True)
        if self.model.renorms():
            images, _ = BatchStream(
                self.train_set, self.splits["train"], self.config.batch_size, seed, "calibration"
            ).next()
            self.model.calibrate(fit_input(images.to(self.device), self.model))
        if self.phase == "warmup" and self.config.post_train_init == "backbone" and self.main:
            state = self.model.state_dict()
            atomic_save(self.folder.initial, state)
        distributed.barrier()

    def _restore_initial_weights(self) -> None:
        """Every weight back to its value at the start (the backbone's, calibrated), keeping
        the learnt policy logits; the training batches then start over too, so the derived
        model sees the baselines' data in the baselines' order."""
        initial = read_checkpoint(self.folder.initial)
        initial["policy_logits"] = self.model.policy_logits.detach()
        self.model.load_state_dict(initial)
        self.streams["train"].load_state_dict({"epoch": 0, "offset": 0})

    def _stream(self, name: str, split: str) -> BatchStream:
        """Batches of `split` in the order named `name`, this process's share of each."""
        c = self.config
        return BatchStream(
            self.train_set, self.splits[split], c.batch_size, c.seed, name, self.rank, self.world
        )

    def _bar(self, total: int, what: str, initial: int = 0) -> tqdm:
        """A progress bar for `what`, shown by rank 0 only when progress is on."""
        return tqdm(
            total=total,
            initial=initial,
            desc=f"{self.label} {what}".strip(),
            disable=not (self.progress and self.main),
            leave=False,
            dynamic_ncols=True,
        )

    def _recompute_batchnorm(self) -> None:
        """Precise BatchNorm statistics for the trained policy, from batches of the training
        split in an order of their own; under torchrun each process measures its share and
        the statistics are averaged."""
        stream = self._stream("batchnorm", "train")
        bar = self._bar(self.config.batchnorm_batches, "batchnorm statistics")

        def forward() -> None:
            images = fit_input(stream.next()[0].to(self.device), self.model)
            with self.precision.autocast():
                self.model(images, mode="fixed", policy=self.policy)
            bar.update(1)

        with bar:
            recompute_batchnorm(self.model, forward, self.config.batchnorm_batches)
        distributed.average_buffers(self.model)

    def _final(self) -> SearchResult:
        c = self.config
        metrics = {
            "val": evaluate(
                self.model,
                self.train_set,
                self.splits["val"],
                c.batch_size,
                "fixed",
                c.eval_batches,
                self.policy,
            )
        }
        if self.test_set is not None:
            metrics["test"] = evaluate(
                self.model, self.test_set, None, c.batch_size, "fixed", c.eval_batches, self.policy
            )
        self.model.set_policy(self.policy)
        if self.main:
            atomic_write_text(self.folder.metrics, json.dumps(metrics, indent=1))
            self.policy.to_json(self.folder.policy)
        return SearchResult(self.policy, metrics, self.run_dir, self.history)

    # -- logs and checkpoints -----------------------------------------------------------------
    def _log(self, record: dict[str, float]) -> None:
        row = {"phase": self.phase, "step": self.step, "time": time.time(), **record}
        self.history.append(row)
        if not self.main:
            return
        if self.config.log_format == "jsonl":
            with open(self.folder.log("jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
        else:
            path = self.folder.log("csv")
            new = not path.exists()
            fields = ["phase", "step", "time", "loss", *(f"loss_{t.name}" for t in self.tasks)]
            fields += ["tau", "policy_lr", "policy_loss", "sharing", "cost", "latency_ms"]
            fields += ["grad_task", "grad_sharing", "grad_cost", "grad_task_share"]
            fields += [f"p_{b}" for b in BRANCHES]
            with open(path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)

    def _truncate_log(self, lines: int) -> None:
        """Drop log rows written after the checkpoint (they will be written again)."""
        path = self.folder.log(self.config.log_format)
        if not path.exists():
            return
        rows = path.read_text().splitlines(keepends=True)
        header = 1 if self.config.log_format == "csv" else 0
        distributed.barrier()  # every process reads the log before rank 0 cuts it
        if self.main:
            atomic_write_text(path, "".join(rows[: header + lines]))
        if self.config.log_format == "jsonl":
            self.history = [json.loads(r) for r in rows[:lines]]
        else:
            self.history = list(csv.DictReader(rows[: header + lines]))

    def _save(self) -> None:
        self._check_weights()
        state = {
            "phase": self.phase,
            "step": self.step,
            "policy_steps": self.policy_steps,
            "model": self.model.state_dict(),
            "policy": None if self.policy is None else self.policy.__dict__,
            "weighting": self.weighting.state_dict(),
            "opt": self.opt.state_dict() if self.phase != "done" else None,
            "policy_opt": self.policy_opt.state_dict() if self.policy_opt else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.precision.scaler.state_dict(),
            "streams": {k: s.state_dict() for k, s in self.streams.items()},
            "rng": rng_state(),
            "log_lines": len(self.history),
            "conflict": self.conflict.state_dict(),
        }
        if self.main:
            atomic_save(self.folder.checkpoint, state)

    def _load(self) -> None:
        """Continue from checkpoint.pt. It is read with `weights_only` (tensors and plain
        data only: a checkpoint from elsewhere cannot run code), and one that cannot be read
        or does not fit this model is refused with a RunFolderError naming it."""
        path = self.folder.checkpoint
        state = read_checkpoint(path)
        try:
            self._restore(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, ConfigError) as exc:
            raise RunFolderError(
                f"{path}: does not fit this run ({type(exc).__name__}: {_first_line(exc)}); "
                "resume with the run's own model, tasks and config, or start over with --force."
            ) from exc

    def _restore(self, state: dict[str, Any]) -> None:
        self.phase, self.step = state["phase"], state["step"]
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}")
        self.policy_steps = state["policy_steps"]
        self.model.load_state_dict(state["model"])
        fixed = self.phase in ("post", "done")  # before, the policy is not derived yet
        self.policy = Policy(**state["policy"]) if fixed else None
        self.weighting.load_state_dict(state["weighting"])
        self.conflict.load_state_dict(state["conflict"])
        if state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])
        if self.phase != "done":
            self._make_optimizers()
            self.opt.load_state_dict(state["opt"])
            if self.policy_opt is not None:
                self.policy_opt.load_state_dict(state["policy_opt"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self._truncate_log(state["log_lines"])


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The dict in a checkpoint file, read with `weights_only`: a file that holds anything
    but tensors and plain data (which could run code when unpickled), or is truncated or
    not a checkpoint at all, is refused with a RunFolderError naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the protocol of foreign pickles
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RunFolderError(
            f"{path}: holds objects other than tensors and plain data, which onnxmtl never "
            "loads (they could run code); delete the file or start over with --force."
        ) from exc
    except Exception as exc:
        raise RunFolderError(
            f"{path}: not a checkpoint onnxmtl can read ({type(exc).__name__}; truncated or "
            "written by something else); delete the file or start over with --force."
        ) from exc
    if not isinstance(state, dict):
        raise RunFolderError(f"{path}: not a checkpoint written by onnxmtl; delete the file.")
    return state


def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain data (what `weights_only` loads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from `rng_state`'s dict."""
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"
