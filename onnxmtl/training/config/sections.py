"""The sections of a `SearchConfig`, one frozen dataclass per part of a run. Each checks its
own options when built; an option is named in messages by its flat name (`option(flat=)`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from onnxmtl.choices import PrecisionName, SkipProjection, SoftMix
from onnxmtl.errors import ConfigError, shown
from onnxmtl.training.config.check import check_fields, option, refuse_choice
from onnxmtl.training.weighting import WEIGHTINGS

SearchMode = Literal["hard", "soft"]
SearchUpdate = Literal["alternate", "joint"]
DeriveMethod = Literal["argmax", "sample", "conflict", "halving"]
LrSchedule = Literal["constant", "cosine"]
PostTrainSchedule = Literal["step", "cosine"]
SharingPrior = Literal["depth", "conflict"]
ConflictScore = Literal["share", "cosine"]
PostTrainInit = Literal["backbone", "search"]
SelectStart = Literal["final", "search"]
LogFormat = Literal["jsonl", "csv"]
LatencyProvider = Literal["auto", "cpu", "cuda", "tensorrt"]


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how a run executes, and what it writes as it goes."""

    seed: int = option(
        0, at_least=0
    )  # seeds weights, data order, Gumbel noise and the derived policy
    device: str = "cpu"  # 'cpu', 'cuda' or 'cuda:N'
    threads: int = option(0, at_least=0)  # CPU threads of torch and onnxruntime during a run
    # (0: their defaults, every core); set it when other jobs share the machine
    precision: PrecisionName = "auto"  # 'auto' (bf16 autocast on CUDA, fp32 on the CPU),
    # 'fp32', 'bf16' (autocast) or 'fp16' (autocast with a gradient scaler)
    checkpoint_every: int = option(50, at_least=0)  # steps between checkpoints
    log_format: LogFormat = "jsonl"  # 'jsonl' or 'csv'

    def __post_init__(self) -> None:
        check_fields(self)
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError(
                f"config: device={shown(self.device)}; expected 'cpu', 'cuda' or 'cuda:N' (N a "
                "device index from 0)."
            )


@dataclass(frozen=True)
class DatasetOptions:
    """What the dataset is built with and how it is batched and split."""

    options: dict[str, Any] = field(default_factory=dict, metadata={"flat": "data"})  # the
    # dataset's own options (count, size), given to its factory
    batch_size: int = option(32, at_least=1)  # the global batch of every phase
    val_fraction: float = 0.1  # share of the training set held out for validation

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class LossOptions:
    """How the tasks' losses are combined, in every phase (on top of each task's weight)."""

    weighting: str = "equal"  # 'equal', 'uncertainty' (Kendall et al.), 'dwa' or a name given
    # to onnxmtl.training.register_weighting
    dwa_temperature: float = 2.0
    dwa_window: int = option(20, at_least=1)  # steps per DWA 'epoch'

    def __post_init__(self) -> None:
        check_fields(self)
        if self.weighting not in WEIGHTINGS:
            raise refuse_choice("weighting", self.weighting, tuple(WEIGHTINGS))


@dataclass(frozen=True)
class WarmupOptions:
    """Warm-up (AutoMTL's pre-training): every branch averaged, Adam on the weights; and the
    gradient conflict between tasks (RECON) measured meanwhile on each unit's shared branch:
    per unit, how often two tasks' gradients point apart (conflict.json)."""

    steps: int = option(50, flat="warmup_steps", at_least=0)
    lr: float = option(1e-3, flat="warmup_lr", at_least=0)
    conflict_every: int = option(5, at_least=0)  # measure on every this many warm-up steps
    # (0: never); each measurement costs one extra backward pass per task
    conflict_threshold: float = 0.0  # a pair of tasks conflicts on a unit where the cosine of
    # their gradients is below this
    conflict_score: ConflictScore = "share"  # what ranks the units: 'share' (RECON: how often
    # a pair conflicts) or 'cosine' (how far apart the gradients point on average)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class SearchOptions:
    """Policy search: the weights and the policy logits trained together (or in turn, on
    train1 and train2), then the policy derived from the logits."""

    steps: int = option(150, flat="search_steps", at_least=0)  # iterations of (weight_steps,
    # policy_steps)
    weight_steps: int = option(1, at_least=1)
    policy_steps: int = option(1, at_least=1)
    mode: SearchMode = option("soft", flat="search_mode")  # 'soft' (every branch computed
    # and mixed, so the tasks' gradient on the policy carries no sampling noise) or 'hard'
    # (AutoMTL's: one sampled branch, straight-through)
    mix: SoftMix = option("parameters", flat="soft_mix")  # soft mode in training:
    # 'parameters' (each task's copy run once with its and the shared branch's parameters
    # mixed, the skip added: fewer convolutions; compiler.mixing) or 'outputs' (AutoMTL's:
    # each branch run, their outputs mixed)
    skips: SkipProjection = option("grouped", flat="skip_projection")  # the skip of a unit
    # that changes shape: a 'grouped' 1x1 projection (cheap), a 'full' one (AutoMTL's) or
    # 'none' (identity skips only, AdaShare's space: a cheaper soft step, a smaller space)
    update: SearchUpdate = option("joint", flat="search_update")  # 'joint' (weights and
    # policy from one forward and backward pass on a batch of the training split) or
    # 'alternate' (AutoMTL's: weight steps on train1, then policy steps on train2; twice the
    # passes)
    weight_lr: float = option(0.01, at_least=0)  # SGD, momentum 0.9
    weight_decay: float = option(1e-4, at_least=0)
    policy_lr: float = option(
        0.1, at_least=0
    )  # Adam's learning rate on the policy logits at the first policy
    # step (Adam moves a logit by about this much per step: 0.1 lets 100 steps commit)
    policy_lr_schedule: LrSchedule = "cosine"  # 'cosine' (down to 0 at the last policy step,
    # whatever the length of the search) or 'constant'
    policy_weight_decay: float = option(5e-4, at_least=0)
    tau: float = 5.0  # Gumbel-softmax temperature at the first policy step ...
    tau_end: float = 0.5  # ... annealed geometrically to this at the last one, so that short
    # and long searches both end with nearly one-hot samples
    sharing_weight: float = option(
        0.05, at_least=0
    )  # AutoMTL's weighted sharing regulariser (lambda)
    sharing_scale: float = 6.0  # its softplus sharpness s
    sharing_prior: SharingPrior = "depth"  # how hard it pushes each unit towards sharing:
    # 'depth' (AutoMTL: shallow units hardest, the deepest not at all) or 'conflict' (by the
    # tasks' gradient conflict measured in warm-up: the most conflicting unit not at all)
    per_task_steps: bool = False  # AutoMTL: one optimiser step per task per iteration
    conflict_init: bool = False  # start the search with each unit's task-specific logit set
    # to conflict_strength times its conflict score rescaled to [0, 1] over the units
    conflict_strength: float = 2.0
    derive: DeriveMethod = "halving"  # 'argmax', 'sample' (seeded by `seed`), 'conflict' (the
    # conflict heuristic, ignoring the searched logits: a baseline for the search) or
    # 'halving' (candidate policies, the searched one among them, fine-tuned briefly from
    # the searched weights and measured; the `select` options)
    conflict_share: float = 0.25  # derive 'conflict': the most conflicting units become
    # task-specific for every task, as many as hold at most this share of the parameters of
    # the backbone's units (whatever the heads and the number of tasks)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.tau > 0 or not self.tau_end > 0:
            raise ConfigError("config: tau and tau_end must be > 0.")
        if not self.policy_lr > 0:
            raise ConfigError("config: policy_lr must be > 0.")
        if not 0 <= self.conflict_share <= 1:
            raise ConfigError("config: conflict_share is a share of the units' parameters, [0, 1].")
        if self.update == "joint" and (
            self.weight_steps != 1 or self.policy_steps != 1 or self.per_task_steps
        ):
            raise ConfigError(
                "config: search_update='joint' takes one step of the weights and the policy "
                "together; leave weight_steps and policy_steps at 1 and per_task_steps off, or "
                "set search_update: alternate."
            )

    @property
    def needs_conflict(self) -> bool:
        """Whether the search uses the conflict measured in warm-up."""
        return self.derive == "conflict" or self.conflict_init or self.sharing_prior == "conflict"


@dataclass(frozen=True)
class SelectOptions:
    """derive 'halving': how the candidate policies are measured (`training.selection`)."""

    steps: int = option(60, flat="select_steps", at_least=0)  # fine-tuning steps of every
    # candidate at the first rung (each task's options); the second rung (their best
    # combinations) takes three times as many; neither more than post_train_steps
    keep: int = option(1, flat="select_keep", at_least=1)  # options each task keeps for the
    # second rung
    batches: int = option(60, flat="select_batches", at_least=1)  # batches of train2 every
    # candidate is scored on (at most eval_batches, where that is set)
    batchnorm_batches: int = option(4, flat="select_batchnorm_batches", at_least=1)  # batches
    # of train1 over which each candidate's BatchNorm statistics are re-estimated
    start: SelectStart = option("final", flat="select_start")  # where every candidate's
    # fine-tuning starts: where the final model's post-training starts (post_train_init), or
    # the searched weights

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class CostOptions:
    """The search's optional cost regulariser, and where a latency cost is measured."""

    name: str | None = option(None, flat="cost")  # each branch's 'params', 'macs', measured
    # onnxruntime 'latency' or a name given to onnxmtl.cost.register_cost (checked against
    # those when the search starts); None: no cost unless latency_budget_ms is set
    weight: float = option(1.0, flat="cost_weight", at_least=0)
    budget: float | None = option(None, flat="cost_budget")  # fraction of the all-specific
    # cost; None: plain penalty
    latency_budget_ms: float | None = None  # a deadline for the derived model (a 'latency'
    # cost, see `model`): the search is penalised for expected latency above it
    latency_provider: LatencyProvider = "auto"  # where latency is measured: 'auto', 'cpu',
    # 'cuda' or 'tensorrt'
    latency_batch: int = option(1, at_least=1)  # the batch size the deadline is for
    latency_threads: int = option(0, at_least=0)  # onnxruntime intra-op threads (0: default)
    latency_cache: str | None = None  # folder of measured tables; None: $ONNXMTL_CACHE/latency

    def __post_init__(self) -> None:
        check_fields(self)
        if self.name is not None and not (isinstance(self.name, str) and self.name):
            raise ConfigError(f"config: cost={self.name!r}; expected the name of a cost model.")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ConfigError("config: cost_budget is a fraction of the all-specific cost, (0, 1].")
        if self.latency_budget_ms is not None:
            ms = self.latency_budget_ms
            if not isinstance(ms, int | float) or ms <= 0:
                raise ConfigError("config: latency_budget_ms must be a number of ms > 0.")
            if self.name not in (None, "latency") or self.budget is not None:
                raise ConfigError(
                    "config: latency_budget_ms is a latency cost with a deadline; leave cost "
                    "and cost_budget out (or set cost: latency)."
                )

    @property
    def model(self) -> str | None:
        """The cost model the search uses: `name`, or 'latency' under a latency budget (which
        is a latency cost whether or not `name` says so)."""
        return "latency" if self.latency_budget_ms is not None else self.name


@dataclass(frozen=True)
class PostTrainOptions:
    """Post-training of the derived model, the baselines' length, and the BatchNorm statistics
    every final model is evaluated and exported with."""

    steps: int = option(200, flat="post_train_steps", at_least=0)
    lr: float = option(1e-3, flat="post_train_lr", at_least=0)  # Adam's learning rate at the first
    # post-training step,
    lr_schedule: PostTrainSchedule = option("step", flat="post_train_lr_schedule")  # halved
    # every lr_step steps ('step') or decayed on a cosine to 0 by the last step ('cosine',
    # whatever the length: at the demo's 150 steps it trained less and scored worse)
    lr_step: int = option(1000, flat="post_train_lr_step", at_least=1)
    init: PostTrainInit = option("backbone", flat="post_train_init")  # post-train from the
    # backbone's weights (so every final model starts alike and differs only by its
    # architecture) or 'search' (keep the weights trained during warm-up and search)
    baseline_steps: int | None = None  # baselines' training steps; None: as many as the
    # derived model's post-training (or, with init 'search', as many weight updates as the
    # whole search run)
    batchnorm_batches: int = option(32, at_least=0)  # batches over which every BatchNorm's
    # statistics are re-estimated with the final weights before evaluation and export
    # (precise BN); 0 keeps the running averages of training

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class EvaluationOptions:
    """How the final models are evaluated."""

    batches: int | None = option(None, flat="eval_batches")  # cap the evaluation batches
    # (None: the whole split)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.batches is not None and self.batches < 1:
            raise ConfigError("config: eval_batches must be >= 1, or left out for every batch.")


@dataclass(frozen=True)
class DeployOptions:
    """What `run` does with the exported models beyond timing them."""

    quantize: bool = False  # also write the deployed model as static INT8 (`onnxmtl quantize`)
    # with every task's test metrics before and after, in the report
    quantize_tolerance: float = option(
        1.0, at_least=0
    )  # each task's largest loss against fp32, in % of its
    # metrics; nodes stay in float until every task is within it
    quantize_count: int = option(64, at_least=1)  # training images to calibrate on

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.quantize_tolerance >= 0:
            raise ConfigError("config: quantize_tolerance is a loss in %, >= 0.")
