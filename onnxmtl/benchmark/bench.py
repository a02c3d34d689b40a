"""`bench`: onnxruntime latency, throughput, size and memory of ONNX models, side by side."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxmtl.benchmark.memory import peak_memory_mb
from onnxmtl.benchmark.openvino_runtime import compile_model, openvino_call, openvino_module, parity
from onnxmtl.benchmark.result import BenchResult, BenchSettings, LatencyRow, ModelInfo
from onnxmtl.benchmark.timing import interleaved_times
from onnxmtl.choices import RUNTIMES
from onnxmtl.errors import ConfigError, ModelFileError
from onnxmtl.exporter import POLICY_KEY
from onnxmtl.ir import load
from onnxmtl.runtime import available_providers, session
from onnxmtl.version import __version__

PROVIDERS = {"auto": None, "cpu": ["CPUExecutionProvider"]}
TENSORRT = "TensorrtExecutionProvider"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")  # the marks of a quantised file


def resolve_providers(provider: str) -> list[str]:
    """'auto' (CUDA where it loads, else CPU), 'cpu', 'cuda' or 'tensorrt' (only when asked:
    engines take minutes to build) as onnxruntime provider names."""
    if provider == "tensorrt":
        cuda = available_providers()
        if cuda[0] != "CUDAExecutionProvider" or TENSORRT not in ort.get_available_providers():
            raise ConfigError(
                "--provider tensorrt: onnxruntime's TensorRT provider or a CUDA device is not "
                "available here; use --provider cuda, auto or cpu."
            )
        return [TENSORRT, *cuda]
    if provider == "cuda":
        providers = available_providers()
        if providers[0] != "CUDAExecutionProvider":
            raise ConfigError(
                "--provider cuda: onnxruntime's CUDA provider or a CUDA device is not available "
                "here; use --provider auto or cpu."
            )
        return providers
    if provider not in PROVIDERS:
        raise ConfigError(f"--provider {provider!r}: expected auto, cpu, cuda or tensorrt.")
    return PROVIDERS[provider] or available_providers()


def describe(path: Path) -> ModelInfo:
    """What a model file holds: inputs, outputs, parameters, MACs per image, bytes, and the
    policy and tasks that onnxmtl export records in the metadata."""
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found.")
    proto = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    name, shape = declared_input(proto)
    if any(n.op_type in QDQ_OPS for n in proto.graph.node):  # quantised: count the weights
        outputs = [o.name for o in proto.graph.output]
        params, macs = sum(_elements(t) for t in proto.graph.initializer), None
    else:
        graph = load(path, features=None)
        outputs, params, macs = graph.features, graph.params, graph.macs
    return ModelInfo(
        path=str(path),
        input=name,
        input_shape=shape,
        outputs=outputs,
        params=params,
        macs=macs,
        bytes=path.stat().st_size,
        policy=json.loads(meta[POLICY_KEY]) if POLICY_KEY in meta else None,
    )


def _elements(tensor: onnx.TensorProto) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def declared_input(proto: onnx.ModelProto) -> tuple[str, list[int | str]]:
    """The image input as the file declares it (name, dimensions; symbolic ones by name): what
    onnxruntime is fed, whatever load adapted (a batch of 1 made symbolic, channels-last
    made NCHW) to build the graph."""
    weights = {t.name for t in proto.graph.initializer}
    value = next(v for v in proto.graph.input if v.name not in weights)
    dims = value.type.tensor_type.shape.dim
    return value.name, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def _batch_shape(info: ModelInfo, batch: int) -> tuple[int, ...]:
    """The input shape of `info`'s model at batch size `batch`."""
    shape = info.input_shape
    image = [d for d in shape[1:] if isinstance(d, int)]
    if len(image) < len(shape) - 1:
        raise ConfigError(
            f"{info.path}: input '{info.input}' has symbolic size {shape}; export it with "
            "a fixed image size."
        )
    if isinstance(shape[0], int) and shape[0] != batch:
        raise ConfigError(
            f"{info.path}: input batch is fixed at {shape[0]}; benchmark it with "
            f"--batch-sizes {shape[0]} or export it with a dynamic batch."
        )
    return (batch, *image)


def bound_call(
    sess: ort.InferenceSession, feed: dict[str, np.ndarray]
) -> tuple[Callable[[], None], ort.IOBinding]:
    """A call running `sess` on inputs already placed on its device, leaving the outputs
    there (I/O binding), so that timings exclude host-device copies; and the binding, whose
    outputs can be read back."""
    device = "cpu" if sess.get_providers()[0] == "CPUExecutionProvider" else "cuda"
    binding = sess.io_binding()
    for name, x in feed.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, device, 0))
    for out in sess.get_outputs():
        binding.bind_output(out.name, device)

    def call() -> None:
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return call, binding


def bench(
    models: Mapping[str, str | Path] | Sequence[str | Path],
    batch_sizes: Sequence[int] = (1,),
    provider: str = "auto",
    threads: int = 0,
    warmup: int = 5,
    repeats: int = 50,
    memory: bool = True,
    seed: int = 0,
    runtime: str = "onnxruntime",
    precision: str = "f32",
) -> BenchResult:
    """Latency (p50/p90/p99 ms) and throughput (images/s) of every model for every batch
    size, timed in turn within each repeat after `warmup` runs (with several models, worker
    threads do not spin between runs), plus parameters, MACs, file bytes and peak memory.
    Inputs and outputs stay on the provider's device (I/O binding): a GPU's timings exclude
    host copies. Models are named by file stem unless given as a dict. `runtime`
    'openvino' times the same files in OpenVINO's CPU plugin at `precision` (its inference
    precision hint), each first checked against onnxruntime (`BenchSettings.parity`); peak
    memory is onnxruntime's only."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}.")
    if not isinstance(models, Mapping):
        models = {Path(m).stem: m for m in models}
    if not models:
        raise ConfigError("bench needs at least one ONNX model.")
    if repeats < 1 or warmup < 0 or not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError("bench needs repeats >= 1, warmup >= 0 and batch sizes >= 1.")
    providers = resolve_providers(provider)
    infos = {name: describe(Path(path)) for name, path in models.items()}
    spinning = len(infos) == 1  # sessions taking turns must not busy-wait on each other's cores
    openvino = runtime == "openvino"
    sessions = {
        name: compile_model(Path(info.path), precision, threads)
        if openvino
        else session(info.path, providers, threads, spinning)
        for name, info in infos.items()
    }
    rng = np.random.default_rng(seed)
    rows = []
    checked: dict[str, float] = {}
    for batch in batch_sizes:
        calls = {}
        for name, info in infos.items():
            x = rng.standard_normal(_batch_shape(info, batch)).astype(np.float32)
            if openvino:
                if name not in checked:
                    checked[name] = parity(sessions[name], Path(info.path), x, precision)
                calls[name] = openvino_call(sessions[name], x)
            else:
                calls[name] = bound_call(sessions[name], {info.input: x})[0]
        times = interleaved_times(calls, repeats, warmup)
        for name, seconds in times.items():
            ms = np.array(seconds) * 1e3
            rows.append(
                LatencyRow(
                    model=name,
                    batch=batch,
                    p50_ms=float(np.percentile(ms, 50)),
                    p90_ms=float(np.percentile(ms, 90)),
                    p99_ms=float(np.percentile(ms, 99)),
                    mean_ms=float(statistics.fmean(ms)),
                    throughput=batch / float(np.percentile(ms, 50)) * 1e3,
                )
            )
    if memory and not openvino:
        for name, info in infos.items():
            shape = _batch_shape(info, max(batch_sizes))
            peak = peak_memory_mb(info.path, shape, providers, threads)
            infos[name] = replace(info, peak_memory_mb=peak)
    settings = BenchSettings(
        providers=[f"OpenVINO CPU, precision hint {precision}"]
        if openvino
        else sessions[next(iter(sessions))].get_providers(),
        threads=threads or "onnxruntime default",
        spinning=spinning,
        io_binding=True,
        warmup=warmup,
        repeats=repeats,
        batch_sizes=list(batch_sizes),
        runtime=runtime,
        parity=checked or None,
    )
    return BenchResult(infos, rows, settings, _versions(openvino))


def _versions(openvino: bool = False) -> dict[str, str]:
    extra = {"openvino": openvino_module().__version__} if openvino else {}
    return {
        **extra,
        "onnxmtl": __version__,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def to_markdown(result: BenchResult, reference: str | None = None) -> str:
    """The result as a markdown table; latencies also as a ratio to the `reference` model
    (default: the first) at the same batch size."""
    infos = result.models
    reference = reference or next(iter(infos))
    if reference not in infos:
        raise ConfigError(f"reference model {reference!r} is not among {list(infos)}.")
    base = {r.batch: r.p50_ms for r in result.latency if r.model == reference}
    lines = [
        f"| model | batch | p50 ms | p90 ms | p99 ms | images/s | p50 / {reference} | params | "
        "MMACs/image | MB file | MB peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.latency:
        info = infos[r.model]
        memory = info.peak_memory_mb
        lines.append(
            f"| {r.model} | {r.batch} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.throughput:.1f} | {r.p50_ms / base[r.batch]:.2f} "
            f"| {info.params:,} | {'-' if info.macs is None else f'{info.macs / 1e6:.1f}'} | "
            f"{info.bytes / 1e6:.2f} | " + (f"{memory:.1f} |" if memory is not None else "- |")
        )
    s = result.settings
    version = result.versions.get(s.runtime, "")
    lines.append(
        f"\n{s.runtime} {version}, {', '.join(s.providers)}, "
        f"threads {s.threads}, {s.warmup} warm-up + {s.repeats} timed runs per "
        "model and batch, interleaved."
    )
    if s.parity:
        worst = max(s.parity.values())
        lines.append(f"Checked against onnxruntime first: at most {worst:.2g} of the output scale.")
    return "\n".join(lines)
