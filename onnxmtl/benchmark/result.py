"""What `bench` measures, as typed records: each model's description, a latency row per
model and batch size, the settings of the measurement, and the versions it ran with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """What a model file holds (`describe`), and its peak memory when bench measured it."""

    path: str
    input: str  # the image input's name
    input_shape: list[int | str]  # as the file declares it; symbolic dimensions by name
    outputs: list[str]
    params: int
    macs: int | None  # per image; None for a quantised (QDQ) file, whose graph is not analysed
    bytes: int  # of the file
    policy: dict[str, Any] | None  # the policy onnxmtl export recorded, if any
    peak_memory_mb: float | None = None  # None: not measured

    def to_dict(self) -> dict[str, Any]:
        """As bench.json stores it: `peak_memory_mb` only where it was measured."""
        data = asdict(self)
        if self.peak_memory_mb is None:
            del data["peak_memory_mb"]
        return data


@dataclass(frozen=True)
class LatencyRow:
    """One model at one batch size: latency percentiles, mean and images per second."""

    model: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # images/s at the p50 latency


@dataclass(frozen=True)
class BenchSettings:
    """How the models were timed."""

    providers: list[str]
    threads: int | str  # intra-op threads, or "onnxruntime default"
    spinning: bool  # whether worker threads busy-wait between runs (only with one model)
    io_binding: bool
    warmup: int
    repeats: int
    batch_sizes: list[int]
    runtime: str = "onnxruntime"  # or "openvino"
    parity: dict[str, float] | None = None  # per model, OpenVINO's largest difference from
    # onnxruntime relative to the output scale (checked before timing)


@dataclass(frozen=True)
class BenchResult:
    """Every model's description and latency rows, the settings and the versions."""

    models: dict[str, ModelInfo]
    latency: list[LatencyRow]
    settings: BenchSettings
    versions: dict[str, str] = field(default_factory=dict)

    def p50_ms(self, batch: int) -> dict[str, float]:
        """Each model's p50 latency at batch size `batch` (models not timed at it left out)."""
        return {r.model: r.p50_ms for r in self.latency if r.batch == batch}

    def to_dict(self) -> dict[str, Any]:
        """The JSON bench.json and a pipeline's results.json store."""
        return {
            "models": {name: info.to_dict() for name, info in self.models.items()},
            "latency": [asdict(r) for r in self.latency],
            "settings": asdict(self.settings),
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        """A result read back from its JSON."""
        return cls(
            models={name: ModelInfo(**info) for name, info in data["models"].items()},
            latency=[LatencyRow(**row) for row in data["latency"]],
            settings=BenchSettings(**data["settings"]),
            versions=dict(data.get("versions", {})),
        )
