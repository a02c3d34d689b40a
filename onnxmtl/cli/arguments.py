"""What the commands share: argument groups, parsers of option values, and the library calls
that turn arguments into a graph, a supermodel or a SearchConfig."""

from __future__ import annotations

import argparse

from onnxmtl.choices import PRECISIONS, SKIP_PROJECTIONS
from onnxmtl.errors import ConfigError

DATA_HELP = "multi-fashion, fashion-locate, fashion-edges, scenes, or a dataset folder"


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) <= 0:
        raise ConfigError(
            f"--input-shape {text!r}: expected four positive integers N,C,H,W, e.g. 1,3,224,224."
        )
    return dims


def parse_features(text: str) -> str | list[str]:
    return "auto" if text == "auto" else [f.strip() for f in text.split(",") if f.strip()]


def parse_sizes(text: str, option: str, count: int | None = None) -> list[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1 or (count is not None and len(values) != count):
        what = f"{count} positive integers" if count else "positive integers"
        raise ConfigError(f"{option} {text!r}: expected {what}, comma-separated.")
    return values


def load_graph(args: argparse.Namespace, whole_graph: bool = False):
    from onnxmtl.ir import load

    features = None if whole_graph else parse_features(args.features)
    return load(args.model, features=features, input_shape=parse_input_shape(args.input_shape))


def compile_model(args: argparse.Namespace):
    from onnxmtl.compiler import compile
    from onnxmtl.tasks import load_tasks

    tasks = load_tasks(args.tasks)
    return compile(
        load_graph(args),
        tasks,
        renormalize=args.renormalize,
        shared_prefix=args.shared_prefix,
        skip_projection=args.skip_projection,
        seed=args.seed,
    )


def search_config(args: argparse.Namespace):
    """The SearchConfig of --config with the command line's overrides (None: defaults)."""
    from onnxmtl.training import SearchConfig

    names = ("device", "threads", "precision", "latency_budget_ms")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if not overrides:
        return args.config
    base = SearchConfig.load(args.config).to_dict()
    return SearchConfig.from_dict({**base, **overrides}, "command line")


def config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of SearchConfig options")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (overrides the config's device)")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads of torch and onnxruntime (default: all cores); fewer leaves cores to "
        "other jobs",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="training precision (default auto: bf16 autocast on CUDA, fp32 on the CPU)",
    )
    parser.add_argument(
        "--latency-budget-ms",
        type=float,
        help="search for the best model whose onnxruntime latency (measured on this machine, "
        "batch latency_batch) stays under this deadline",
    )


def run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path to an ONNX backbone")
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--tasks", help="YAML task list (default: the dataset's tasks)")
    config_args(parser)
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--force", action="store_true", help="replace the run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def compile_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-renormalize",
        dest="renormalize",
        action="store_false",
        default="auto",
        help="do not re-insert a normalisation after units whose BatchNorm was folded",
    )
    parser.add_argument(
        "--shared-prefix", type=int, default=0, help="force the first K units to be shared"
    )
    parser.add_argument(
        "--skip-projection",
        choices=SKIP_PROJECTIONS,
        default="grouped",
        help="skip of a unit that changes shape: grouped 1x1 (cheap), full 1x1 (AutoMTL) or "
        "none (identity skips only, as in AdaShare; a faster soft search step)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of heads and projections")


def model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path to an ONNX backbone")
    parser.add_argument(
        "--features",
        default="auto",
        help="'auto' (last feature map before pooling) or value names, comma-separated",
    )
    parser.add_argument(
        "--input-shape", help="N,C,H,W; needed where the model's H and W are symbolic"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
