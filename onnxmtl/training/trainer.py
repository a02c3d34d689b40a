"""`Trainer`: a run's phases in order (warm-up -> search -> post-train, or post-train alone
for a fixed policy), checkpointed and resumable, then the final evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import overload

import torch

from onnxmtl.compiler import Policy, SuperModel
from onnxmtl.compiler.policy_cost import CostModel
from onnxmtl.data import MultiTaskDataset, split_indices
from onnxmtl.errors import ConfigError
from onnxmtl.io_utils import atomic_write_text
from onnxmtl.run_folder import RunFolder
from onnxmtl.training import distributed
from onnxmtl.training.checkpoint import Checkpointer
from onnxmtl.training.config import SearchConfig
from onnxmtl.training.conflict import ConflictMeter
from onnxmtl.training.evaluate import evaluate, fit_input
from onnxmtl.training.fair_share import FairShare
from onnxmtl.training.log import MetricsLog
from onnxmtl.training.phases import DONE, Phase, PostTrain, Search, Warmup
from onnxmtl.training.precision import Precision
from onnxmtl.training.random_state import seed_all
from onnxmtl.training.result import SearchResult
from onnxmtl.training.session import Session
from onnxmtl.training.stream import BatchStream
from onnxmtl.training.weighting import make_weighting


class Trainer:
    """Runs the phases of `config` on `model`, writing checkpoints, metrics and the policy to
    `run_dir`. `fixed_policy` skips warm-up and search and post-trains that policy (the
    baselines: all-shared, single-task, random). `cost` is the cost model of `config.cost.model`
    for the search's cost regulariser (`onnxmtl.cost.make_cost` builds it); a fixed policy
    needs none. At the end the model carries the trained policy (`SuperModel.set_policy`).

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
        self.model, self.test_set, self.config = model, test, config
        self.run_dir = Path(run_dir)
        self.fixed = fixed_policy is not None
        device = distributed.local_device(torch.device(config.runtime.device))
        rank, world = distributed.setup(device)
        batch = config.dataset.batch_size
        if batch % world:
            raise ConfigError(
                f"batch_size {batch} is the global batch and must divide evenly "
                f"over the {world} processes."
            )
        if not self.fixed and bool(config.cost.model) != (cost is not None):
            raise ConfigError(
                f"config: cost={config.cost.model!r}, but the trainer was given "
                f"{'no' if cost is None else 'a'} cost model; build it from the config with "
                "onnxmtl.cost.make_cost(model, config)."
            )
        model.to(device)
        self.splits = split_indices(
            len(train), config.runtime.seed, config.dataset.val_fraction, train.val_indices()
        )
        loss = config.loss
        weighting = make_weighting(
            loss.weighting, model.tasks, loss.dwa_temperature, loss.dwa_window
        )
        weighting.to(device)
        self.weighting = weighting
        self.session = Session(
            model=model,
            train_set=train,
            config=config,
            folder=RunFolder(self.run_dir),
            device=device,
            rank=rank,
            world=world,
            splits=self.splits,
            weighting=weighting,
            precision=Precision(config.runtime.precision, device),
            conflict=ConflictMeter(
                model, config.warmup.conflict_threshold, config.warmup.conflict_score
            ),
            cost=None if self.fixed else cost,
            policy=fixed_policy,
            progress=progress,
            label=label,
        )
        self.log = MetricsLog(
            self.session.folder, config.runtime.log_format, model.tasks, self.main
        )
        self.checkpointer = Checkpointer(self.session, self.log)
        run = self.session
        self.phases: list[Phase] = (
            [PostTrain(run)]
            if self.fixed
            else [Warmup(run), Search(run, self.checkpointer), PostTrain(run)]
        )
        self.current = 0  # index of the phase running; len(phases) when done
        self.phases[0].begin()

    @property
    def main(self) -> bool:
        return self.session.main

    @property
    def phase(self) -> Phase | None:
        """The phase running (None when done)."""
        return self.phases[self.current] if self.current < len(self.phases) else None

    @property
    def history(self) -> list[dict]:
        """The log rows so far."""
        return self.log.history

    @overload
    def run(self, resume: bool = False, stop_after: None = None) -> SearchResult: ...

    @overload
    def run(self, resume: bool = False, stop_after: int | None = None) -> SearchResult | None: ...

    def run(self, resume: bool = False, stop_after: int | None = None) -> SearchResult | None:
        """Run (or resume) to the end; `stop_after` N steps returns None early (for tests
        and for splitting work), leaving a checkpoint to resume from. On the CPU with no thread
        count pinned, torch's threads follow the cores other processes leave idle
        (`FairShare`)."""
        run = self.session
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and run.folder.checkpoint.exists():
            self.current = self.checkpointer.restore(self.phases, DONE)
        else:
            self._start()
        share = self._fair_share()
        try:
            return self._run_phases(stop_after, share)
        finally:
            if share is not None:
                share.close()

    def _fair_share(self) -> FairShare | None:
        """A FairShare of the CPU while no thread count is pinned (`threads: 0`)."""
        run = self.session
        return FairShare() if run.device.type == "cpu" and not run.config.runtime.threads else None

    def _run_phases(self, stop_after: int | None, share: FairShare | None) -> SearchResult | None:
        run = self.session
        done = 0
        while (phase := self.phase) is not None:
            length = phase.length()
            bar = run.bar(length, "train" if self.fixed else phase.title, initial=run.step)
            self.model.train()
            while run.step < length:
                if stop_after is not None and done >= stop_after:
                    bar.close()
                    self.checkpointer.save(phase, DONE)
                    return None
                record = self._run_step()
                if share is not None:
                    share.step()
                if run.world > 1:
                    record = dict(zip(record, distributed.mean(list(record.values()), run.device)))
                phase.check_finite(record)
                run.step += 1
                done += 1
                self.log.write(phase.name, run.step, record)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k in ("loss", "tau")})
                every = self.config.runtime.checkpoint_every
                if every and run.step % every == 0:
                    self.checkpointer.save(phase, DONE)
            bar.close()
            self._next_phase()
            self.checkpointer.save(self.phase, DONE)
        return self._final()

    def _run_step(self) -> dict[str, float]:
        """One step of the phase running."""
        return self._running().step()

    def _running(self) -> Phase:
        """The phase running, while there is one."""
        phase = self.phase
        if phase is None:
            raise RuntimeError("the run is done: no phase is running.")
        return phase

    def _next_phase(self) -> None:
        """Finish the phase running and begin the next one."""
        self._running().finish()
        self.current += 1
        self.session.step = 0
        if self.phase is not None:
            self.phase.begin()

    def _start(self) -> None:
        """A fresh run: seed the generators, write config.json, drop an earlier run's logs,
        calibrate the re-inserted normalisations and keep the starting weights where the
        post-training starts from them."""
        run, c = self.session, self.config
        seed_all(c.runtime.seed)
        if self.main:
            atomic_write_text(run.folder.config, json.dumps(c.to_dict(), indent=1))
            for earlier in (run.folder.metrics, *run.folder.logs):
                earlier.unlink(missing_ok=True)
        if self.model.renorms():
            images, _ = BatchStream(
                run.train_set,
                self.splits["train"],
                c.dataset.batch_size,
                c.runtime.seed,
                "calibration",
            ).next()
            self.model.calibrate(fit_input(images.to(run.device), self.model))
        if not self.fixed and c.post_train.init == "backbone":
            self.checkpointer.save_initial()
        distributed.barrier()

    def _final(self) -> SearchResult:
        """Evaluate the trained policy on the validation split (and the test set), write
        metrics.json and policy.json, and give the model its policy."""
        run, c = self.session, self.config
        policy = run.policy
        if policy is None:  # the search's finish or the fixed policy set it
            raise RuntimeError("the run ended without a policy to evaluate.")
        metrics = {
            "val": evaluate(
                self.model,
                run.train_set,
                self.splits["val"],
                c.dataset.batch_size,
                "fixed",
                c.evaluation.batches,
                policy,
            )
        }
        if self.test_set is not None:
            metrics["test"] = evaluate(
                self.model,
                self.test_set,
                None,
                c.dataset.batch_size,
                "fixed",
                c.evaluation.batches,
                policy,
            )
        self.model.set_policy(policy)
        if self.main:
            atomic_write_text(run.folder.metrics, json.dumps(metrics, indent=1))
            policy.to_json(run.folder.policy)
        return SearchResult(policy, metrics, self.run_dir, self.history)
