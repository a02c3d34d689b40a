"""`SearchConfig`: every hyper-parameter of a run, in frozen sections, read from flat or
nested YAML and stored flat in config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from onnxmtl.errors import ConfigError
from onnxmtl.io_utils import read_yaml
from onnxmtl.training.config.flat import FLAT, flatten
from onnxmtl.training.config.sections import (
    CostOptions,
    DatasetOptions,
    DeployOptions,
    EvaluationOptions,
    LossOptions,
    PostTrainOptions,
    RuntimeOptions,
    SearchOptions,
    SelectOptions,
    WarmupOptions,
)


@dataclass(frozen=True)
class SearchConfig:
    """Defaults are sized for a 2-core CPU and finish in minutes; scale steps up on a GPU.
    Build one with `from_dict` or `load` (flat or nested options) and change one with
    `with_options` (flat options): each checks the options as the sections do."""

    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    dataset: DatasetOptions = field(default_factory=DatasetOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    warmup: WarmupOptions = field(default_factory=WarmupOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    select: SelectOptions = field(default_factory=SelectOptions)
    cost: CostOptions = field(default_factory=CostOptions)
    post_train: PostTrainOptions = field(default_factory=PostTrainOptions)
    evaluation: EvaluationOptions = field(default_factory=EvaluationOptions)
    deploy: DeployOptions = field(default_factory=DeployOptions)

    def __post_init__(self) -> None:
        if self.search.needs_conflict and not 0 < self.warmup.conflict_every <= self.warmup.steps:
            raise ConfigError(
                "config: derive 'conflict', conflict_init and sharing_prior 'conflict' need "
                "conflict measurements: set conflict_every between 1 and warmup_steps."
            )

    @property
    def baseline_length(self) -> int:
        """The baselines' training steps: `baseline_steps`, or as many as the derived model's
        post-training, or with post_train_init 'search' as many weight updates as the run."""
        post = self.post_train
        if post.baseline_steps is not None:
            return post.baseline_steps
        if post.init == "backbone":
            return post.steps
        return self.warmup.steps + self.search.steps * self.search.weight_steps + post.steps

    def to_dict(self) -> dict[str, Any]:
        """The options by flat name, as config.json stores them; `cost` is the cost model the
        search uses (`CostOptions.model`)."""
        sections = asdict(self)
        flat = {name: sections[section][f] for name, (section, f) in FLAT.items()}
        flat["cost"] = self.cost.model
        return flat

    def with_options(self, **options: Any) -> SearchConfig:
        """This config with `options` changed (by flat name, or sections as `from_dict` takes
        them), checked as `from_dict` does."""
        flat = flatten(options)
        changes: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            section, f = FLAT[name]
            changes.setdefault(section, {})[f] = value
        return replace(
            self,
            **{section: replace(getattr(self, section), **c) for section, c in changes.items()},
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "config") -> SearchConfig:
        """The config of `data`: options by flat name, sections of options (`search: {steps:
        3}`) or both; missing options keep their defaults. Errors start with `where`."""
        try:
            return cls().with_options(**flatten(data or {}))
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


def as_config(config: SearchConfig | dict[str, Any] | str | Path | None) -> SearchConfig:
    """A SearchConfig from itself, a dict of options, a YAML path, or None (the defaults)."""
    if isinstance(config, SearchConfig):
        return config
    if isinstance(config, dict):
        return SearchConfig.from_dict(config)
    return SearchConfig.load(config)
