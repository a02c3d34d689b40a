"""`SearchConfig`: every hyper-parameter of warm-up, search and post-training, from YAML."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from onnxmtl.errors import ConfigError
from onnxmtl.io_utils import read_yaml
from onnxmtl.training.precision import PrecisionName
from onnxmtl.training.weighting import WEIGHTINGS

SearchMode = Literal["hard", "soft"]
DeriveMethod = Literal["argmax", "sample", "conflict"]
LrSchedule = Literal["constant", "cosine"]
PostTrainSchedule = Literal["step", "cosine"]
SharingPrior = Literal["depth", "conflict"]
PostTrainInit = Literal["backbone", "search"]
LogFormat = Literal["jsonl", "csv"]
LatencyProvider = Literal["auto", "cpu", "cuda", "tensorrt"]


def literal_fields(cls: type) -> dict[str, tuple[Any, ...]]:
    """The allowed values of each field of dataclass `cls` typed as a Literal: the one place
    where an option's choices are written is its type."""
    hints = get_type_hints(cls)
    return {
        f.name: get_args(hints[f.name])
        for f in fields(cls)
        if getattr(hints[f.name], "__origin__", None) is Literal
    }


@dataclass
class SearchConfig:
    """Defaults are sized for a 2-core CPU and finish in minutes; scale steps up on a GPU."""

    seed: int = 0  # seeds weights, data order, Gumbel noise and the derived policy
    device: str = "cpu"  # 'cpu', 'cuda' or 'cuda:N'
    threads: int = 0  # CPU threads of torch and onnxruntime during a run (0: their defaults,
    # every core); set it when other jobs share the machine
    precision: PrecisionName = "auto"  # 'auto' (bf16 autocast on CUDA, fp32 on the CPU), 'fp32',
    # 'bf16' (autocast) or 'fp16' (autocast with a gradient scaler)
    batch_size: int = 32
    data: dict[str, Any] = field(default_factory=dict)  # options of the dataset (count, size)
    val_fraction: float = 0.1  # share of the training set held out for validation

    # Warm-up (AutoMTL's pre-training): every branch averaged, Adam on the weights.
    warmup_steps: int = 50
    warmup_lr: float = 1e-3

    # Policy search: alternating weight steps on train1 and policy steps on train2.
    search_steps: int = 150  # iterations of (weight_steps, policy_steps)
    weight_steps: int = 1
    policy_steps: int = 1
    search_mode: SearchMode = "hard"  # 'hard' (straight-through, one branch) or 'soft' (all three)
    weight_lr: float = 0.01  # SGD, momentum 0.9
    weight_decay: float = 1e-4
    policy_lr: float = 0.1  # Adam's learning rate on the policy logits at the first policy
    # step (Adam moves a logit by about this much per step: 0.1 lets 100 steps commit)
    policy_lr_schedule: LrSchedule = (
        "cosine"  # 'cosine' (down to 0 at the last policy step, whatever
    )
    # the length of the search) or 'constant'
    policy_weight_decay: float = 5e-4
    tau: float = 5.0  # Gumbel-softmax temperature at the first policy step ...
    tau_end: float = 0.5  # ... annealed geometrically to this at the last one, so that short
    # and long searches both end with nearly one-hot samples
    sharing_weight: float = 0.05  # AutoMTL's weighted sharing regulariser (lambda)
    sharing_scale: float = 6.0  # its softplus sharpness s
    sharing_prior: SharingPrior = "depth"  # how hard it pushes each unit towards sharing:
    # 'depth' (AutoMTL: shallow units hardest, the deepest not at all) or 'conflict' (by the
    # tasks' gradient conflict measured in warm-up: the most conflicting unit not at all)
    cost: str | None = None  # optional cost regulariser: each branch's 'params', 'macs',
    # measured onnxruntime 'latency' or a name given to onnxmtl.cost.register_cost (checked
    # against those when the search starts)
    cost_weight: float = 1.0
    cost_budget: float | None = None  # fraction of the all-specific cost; None: plain penalty
    latency_budget_ms: float | None = None  # a deadline for the derived model (sets cost to
    # 'latency'): the search is penalised for expected latency above it
    latency_provider: LatencyProvider = (
        "auto"  # where latency is measured: 'auto', 'cpu', 'cuda' or
    )
    # 'tensorrt'
    latency_batch: int = 1  # the batch size the deadline is for
    latency_threads: int = 0  # onnxruntime intra-op threads (0: its default)
    latency_cache: str | None = None  # folder of measured tables; None: $ONNXMTL_CACHE/latency
    per_task_steps: bool = False  # AutoMTL: one optimiser step per task per iteration

    # Gradient conflict between tasks (RECON), measured during warm-up on each unit's shared
    # branch: per unit, how often two tasks' gradients point apart (conflict.json).
    conflict_every: int = 5  # measure on every this many warm-up steps (0: never); each
    # measurement costs one extra backward pass per task
    conflict_threshold: float = 0.0  # a pair of tasks conflicts on a unit where the cosine of
    # their gradients is below this
    conflict_init: bool = False  # start the search with each unit's task-specific logit set to
    # conflict_strength times its conflict score rescaled to [0, 1] over the units
    conflict_strength: float = 2.0
    conflict_share: float = 0.25  # derive 'conflict': the most conflicting units become
    # task-specific for every task, as many as hold at most this share of the parameters of
    # the backbone's units (whatever the heads and the number of tasks)

    # Derive and post-train.
    derive: DeriveMethod = "argmax"  # 'argmax', 'sample' (seeded by `seed`) or 'conflict' (the
    # conflict heuristic above, ignoring the searched logits: a baseline for the search)
    post_train_steps: int = 200
    post_train_lr: float = 1e-3  # Adam's learning rate at the first post-training step,
    post_train_lr_schedule: PostTrainSchedule = "step"  # halved every post_train_lr_step
    # steps ('step') or decayed on a cosine to 0 by the last step ('cosine', whatever the
    # length: at the demo's 150 steps it trained less and scored worse than 'step')
    post_train_lr_step: int = 1000
    post_train_init: PostTrainInit = "backbone"  # post-train from the backbone's weights (so every
    # final model starts alike and differs only by its architecture) or 'search' (keep the
    # weights trained during warm-up and search)
    baseline_steps: int | None = None  # baselines' training steps; None: as many as the
    # derived model's post-training (or, with post_train_init 'search', as many weight
    # updates as the whole search run)
    batchnorm_batches: int = 32  # batches over which every BatchNorm's statistics are
    # re-estimated with the final weights before evaluation and export (precise BN); 0 keeps
    # the running averages of training

    # Loss weighting of the tasks (on top of each task's static weight).
    weighting: str = "equal"  # 'equal', 'uncertainty' (Kendall et al.) or 'dwa'
    dwa_temperature: float = 2.0
    dwa_window: int = 20  # steps per DWA 'epoch'

    # Bookkeeping.
    eval_batches: int | None = None  # cap the evaluation batches (None: the whole split)
    checkpoint_every: int = 50  # steps between checkpoints
    log_format: LogFormat = "jsonl"  # 'jsonl' or 'csv'

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"config: {f.name}={value}; expected a finite number.")
        for name in ("batch_size", "weight_steps", "policy_steps", "dwa_window"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"config: {name} must be an integer >= 1.")
        for name in (
            "warmup_steps",
            "search_steps",
            "post_train_steps",
            "batchnorm_batches",
            "checkpoint_every",
            "conflict_every",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"config: {name} must be an integer >= 0.")
        choices = {"weighting": tuple(WEIGHTINGS), **literal_fields(type(self))}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"config: {name}={getattr(self, name)!r}; expected one of "
                    f"{', '.join(str(a) for a in allowed)}."
                )
        if self.cost is not None and not (isinstance(self.cost, str) and self.cost):
            raise ConfigError(f"config: cost={self.cost!r}; expected the name of a cost model.")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"config: device={self.device!r}; expected 'cpu' or 'cuda[:N]'.")
        if not self.tau > 0 or not self.tau_end > 0:
            raise ConfigError("config: tau and tau_end must be > 0.")
        if not self.policy_lr > 0:
            raise ConfigError("config: policy_lr must be > 0.")
        if not 0 <= self.conflict_share <= 1:
            raise ConfigError("config: conflict_share is a share of the units' parameters, [0, 1].")
        needs_conflict = (
            self.derive == "conflict" or self.conflict_init or self.sharing_prior == "conflict"
        )
        if needs_conflict and not 0 < self.conflict_every <= self.warmup_steps:
            raise ConfigError(
                "config: derive 'conflict', conflict_init and sharing_prior 'conflict' need "
                "conflict measurements: set conflict_every between 1 and warmup_steps."
            )
        if self.cost_budget is not None and not 0 < self.cost_budget <= 1:
            raise ConfigError("config: cost_budget is a fraction of the all-specific cost, (0, 1].")
        if self.latency_budget_ms is not None:
            if not isinstance(self.latency_budget_ms, int | float) or self.latency_budget_ms <= 0:
                raise ConfigError("config: latency_budget_ms must be a number of ms > 0.")
            if self.cost not in (None, "latency") or self.cost_budget is not None:
                raise ConfigError(
                    "config: latency_budget_ms is a latency cost with a deadline; leave cost "
                    "and cost_budget out (or set cost: latency)."
                )
            self.cost = "latency"
        for name in ("latency_batch", "latency_threads", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "latency_batch" else 0):
                raise ConfigError(
                    f"config: {name} must be an integer >= {1 if name == 'latency_batch' else 0}."
                )

    @property
    def baseline_length(self) -> int:
        if self.baseline_steps is not None:
            return self.baseline_steps
        if self.post_train_init == "backbone":
            return self.post_train_steps
        return self.warmup_steps + self.search_steps * self.weight_steps + self.post_train_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "config") -> SearchConfig:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown option(s) {', '.join(unknown)}; see "
                "onnxmtl.training.SearchConfig for the options and their defaults."
            )
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {str(exc).removeprefix('config: ')}") from exc

    @classmethod
    def load(cls, path: str | Path | None) -> SearchConfig:
        """The config in a YAML file (missing options keep their defaults); None: defaults."""
        if path is None:
            return cls()
        path = Path(path)
        data = read_yaml(path, "config file not found.")
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of option: value.")
        return cls.from_dict(data, str(path))


def search_progress(config: SearchConfig, policy_step: int) -> float:
    """How far policy step `policy_step` (0-based) is through the search's policy steps: 0 at
    the first, 1 at the last."""
    last = config.search_steps * config.policy_steps - 1
    return min(policy_step / last, 1.0) if last > 0 else 0.0


def tau_at(config: SearchConfig, policy_step: int) -> float:
    """The Gumbel temperature of policy step `policy_step`: `tau` at the first, `tau_end` at
    the last, geometric in between (a constant factor per step)."""
    return config.tau * (config.tau_end / config.tau) ** search_progress(config, policy_step)


def policy_lr_at(config: SearchConfig, policy_step: int) -> float:
    """The policy logits' learning rate at policy step `policy_step`: `policy_lr`, or under
    the 'cosine' schedule `policy_lr` decayed to 0 at the last policy step."""
    if config.policy_lr_schedule == "constant":
        return config.policy_lr
    return config.policy_lr * 0.5 * (1 + math.cos(math.pi * search_progress(config, policy_step)))


def as_config(config: SearchConfig | dict[str, Any] | str | Path | None) -> SearchConfig:
    """A SearchConfig from itself, a dict of options, a YAML path, or None (the defaults)."""
    if isinstance(config, SearchConfig):
        return config
    if isinstance(config, dict):
        return SearchConfig.from_dict(config)
    return SearchConfig.load(config)
