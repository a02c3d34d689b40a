"""Command line: thin commands that gather arguments and call the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from onnxmtl.choices import OPENVINO_PRECISIONS, PRECISIONS, RUNTIMES, SKIP_PROJECTIONS
from onnxmtl.errors import ConfigError, OnnxMtlError
from onnxmtl.version import __version__

DATA_HELP = "multi-fashion, fashion-locate, fashion-edges, scenes, or a dataset folder"


def _input_shape(text: str | None) -> tuple[int, ...] | None:
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


def _features(text: str) -> str | list[str]:
    return "auto" if text == "auto" else [f.strip() for f in text.split(",") if f.strip()]


def _load(args: argparse.Namespace, whole_graph: bool = False):
    from onnxmtl.ir import load

    features = None if whole_graph else _features(args.features)
    return load(args.model, features=features, input_shape=_input_shape(args.input_shape))


def _compile(args: argparse.Namespace):
    from onnxmtl.compiler import compile
    from onnxmtl.tasks import load_tasks

    tasks = load_tasks(args.tasks)
    return compile(
        _load(args),
        tasks,
        renormalize=args.renormalize,
        shared_prefix=args.shared_prefix,
        skip_projection=args.skip_projection,
        seed=args.seed,
    )


def _print_supermodel(model, as_json: bool) -> None:
    from onnxmtl.compiler import format_summary, summarize

    info = summarize(model)
    print(json.dumps(info, indent=2) if as_json else format_summary(info))


def cmd_latency(args: argparse.Namespace) -> int:
    from onnxmtl.cost import describe_table, format_table, latency_table

    if args.model.endswith(".pt"):
        from onnxmtl.compiler import load_supermodel

        model = load_supermodel(args.model)
    elif args.tasks:
        model = _compile(args)
    else:
        raise ConfigError(f"{args.model}: give --tasks TASKS.yaml (or a supermodel .pt file).")
    table = latency_table(
        model, args.provider, args.batch, args.threads, args.cache, progress=not args.json
    )
    info = describe_table(table, model)
    print(json.dumps(info, indent=2) if args.json else format_table(info))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from onnxmtl.ir.summary import describe, describe_values, summarize, summarize_values
    from onnxmtl.lower import find_unsupported

    if args.model.endswith(".pt"):
        from onnxmtl.compiler import load_supermodel

        _print_supermodel(load_supermodel(args.model), args.json)
        return 0
    if args.tasks:
        _print_supermodel(_compile(args), args.json)
        return 0
    if args.values:
        graph = _load(args, whole_graph=True)
        if args.json:
            print(json.dumps(summarize_values(graph)))
        else:
            print(describe_values(graph), end="")
        return 0
    graph = _load(args)
    unsupported = find_unsupported(graph)
    if args.json:
        print(json.dumps(summarize(graph, unsupported), indent=2))
    else:
        print(describe(graph, unsupported))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from onnxmtl.lower.verify import describe_verification, summarize_verification, verify

    graph = _load(args)
    shape = _input_shape(args.input_shape)
    batch = args.batch or (shape[0] if shape else 2)
    result = verify(graph, batch=batch, seed=args.seed, tolerance=args.tolerance)
    if args.json:
        print(json.dumps(summarize_verification(graph, result), indent=2))
    else:
        print(describe_verification(graph, result))
    return 0 if result.ok else 1


def cmd_compile(args: argparse.Namespace) -> int:
    from onnxmtl.compiler import describe_totals, save_supermodel, summarize

    model = _compile(args)
    save_supermodel(model, args.output)
    info = summarize(model)
    if args.json:
        print(json.dumps({"output": args.output, **info}, indent=2))
        return 0
    print(
        f"wrote {args.output}: {describe_totals(info)}; `onnxmtl inspect {args.output}` lists "
        "the branches"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline.runs import search
    from onnxmtl.tasks import format_metrics

    result = search(
        args.model,
        args.data,
        args.out,
        args.tasks,
        _config(args),
        args.resume,
        args.force,
        progress=not args.no_progress,
    )
    counts = result.policy.counts()
    print(
        f"policy: {counts['shared']} shared, {counts['specific']} specific, {counts['skip']} "
        f"skipped (task, unit) pairs -> {args.out}/policy.json"
    )
    for split, metrics in result.metrics.items():
        print(format_metrics(metrics, f"{split}:"))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline.runs import train_baseline
    from onnxmtl.tasks import format_metrics

    results = train_baseline(
        args.model,
        args.data,
        args.out,
        args.baseline,
        args.tasks,
        _config(args),
        args.policy,
        args.resume,
        args.force,
        progress=not args.no_progress,
    )
    for name, result in results.items():
        for split, metrics in result.metrics.items():
            print(format_metrics(metrics, f"{name} {split}:"))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from collections import Counter
    from pathlib import Path

    from onnxmtl.data import MultiTaskDataset, load_dataset
    from onnxmtl.data.labelled_folder import LabelledFolder, is_labelled_folder
    from onnxmtl.data.summary import summarize
    from onnxmtl.errors import DataError
    from onnxmtl.tasks import load_tasks

    options = {"size": args.size} if args.size else {}
    problems: list[tuple[str, str]] = []
    for split in ("train", "test"):
        dataset: MultiTaskDataset
        if is_labelled_folder(Path(args.source)):
            folder = LabelledFolder(args.source, split, strict=False, **options)
            problems += folder.problems
            dataset = folder
        else:
            dataset = load_dataset(args.source, split, **options)
        tasks = load_tasks(args.tasks) if args.tasks else dataset.tasks()
        unlabelled = [t.name for t in tasks if t.name not in {d.name for d in dataset.tasks()}]
        if unlabelled:
            raise DataError(f"{args.source}: does not label task(s) {', '.join(unlabelled)}.")
        try:
            dataset.check(tasks)
        except DataError as exc:
            problems.append(("bad value" if exc.kind == "data" else exc.kind, str(exc)))
        for line in summarize(split, dataset, tasks):
            print(line)
    for kind, message in problems:
        print(f"problem ({kind}): {message}")
    if not problems:
        print(f"ok: {args.source} can be trained on")
        return 0
    for kind, count in Counter(kind for kind, _ in problems).items():
        print(
            f"error: {args.source}: {count} x {kind} (listed above); fix or remove those files "
            "and check again.",
            file=sys.stderr,
        )
    return 2


def cmd_eval(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline.runs import evaluate_run
    from onnxmtl.tasks import format_metrics

    metrics = evaluate_run(args.run_dir, args.split)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_metrics(metrics, f"{args.run_dir} ({args.split}):"))
    return 0


def _sizes(text: str, option: str, count: int | None = None) -> list[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1 or (count is not None and len(values) != count):
        what = f"{count} positive integers" if count else "positive integers"
        raise ConfigError(f"{option} {text!r}: expected {what}, comma-separated.")
    return values


def cmd_derive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from onnxmtl.compiler import SHARED, SPECIFIC, Policy, load_supermodel
    from onnxmtl.derived import derive, save_derived
    from onnxmtl.derived.summary import describe
    from onnxmtl.run_folder import RunFolder

    source = Path(args.source)
    run = RunFolder(source) if source.is_dir() else None
    supermodel = load_supermodel(run.supermodel if run else source)
    policy = args.policy or (str(run.policy) if run else "shared")
    if policy in ("shared", "specific"):
        chosen = supermodel.uniform_policy(SHARED if policy == "shared" else SPECIFIC)
    else:
        chosen = Policy.for_model(policy, supermodel)
    model = derive(supermodel, chosen, args.task)
    save_derived(model, supermodel, args.output)
    print(
        f"wrote {args.output}: {describe(model)}; `onnxmtl export {args.output} -o model.onnx` "
        "writes the ONNX"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from onnxmtl.derived import load_derived
    from onnxmtl.exporter import export

    report = export(
        load_derived(args.derived),
        args.output,
        input_size=None if args.input_size is None else _sizes(args.input_size, "--input-size", 2),
        opset=args.opset,
        tolerance=args.tolerance,
        batch=args.batch,
        fp16=args.fp16,
        image_size=None if args.image_size is None else _sizes(args.image_size, "--image-size", 2),
    )
    print(report.describe())
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline.quantize_run import quantize, quantize_table

    result = quantize(
        args.target,
        data=args.data,
        model=args.model,
        tolerance=args.tolerance,
        count=args.count,
        threads=args.threads,
    )
    print(quantize_table(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from onnxmtl.benchmark import bench, model_names, to_markdown, write_bench

    result = bench(
        model_names([Path(m) for m in args.models]),
        batch_sizes=_sizes(args.batch_sizes, "--batch-sizes"),
        provider=args.provider,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        memory=not args.no_memory,
        runtime=args.runtime,
        precision=args.precision,
    )
    table = to_markdown(result, args.reference)
    out = Path(args.out)
    plots = write_bench(result, table, out)
    print(json.dumps(result.to_dict(), indent=1) if args.json else table)
    print(f"wrote {out}/bench.json, bench.md, {', '.join(plots)}", file=sys.stderr)
    return 0


def _finished_run(result) -> int:
    from onnxmtl.pipeline.report import metrics_table

    print(metrics_table(result.results["methods"]))
    deploy = result.results["deploy"]
    print(f"deploy {deploy['model']}: {deploy['reason']}")
    print(f"report: {result.report} ({result.results['wall_seconds'] / 60:.1f} min)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline import run

    result = run(
        args.model,
        args.data,
        args.out,
        args.tasks,
        _config(args),
        baselines=tuple(b for b in args.baselines.split(",") if b),
        batch_sizes=tuple(_sizes(args.batch_sizes, "--batch-sizes")),
        force=args.force,
        progress=not args.no_progress,
    )
    return _finished_run(result)


def cmd_demo(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline import demo

    return _finished_run(
        demo(
            args.out,
            args.model,
            args.full,
            args.force,
            progress=not args.no_progress,
            threads=args.threads,
        )
    )


def _config_args(parser: argparse.ArgumentParser) -> None:
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


def _config(args: argparse.Namespace):
    """The SearchConfig of --config with the command line's overrides (None: defaults)."""
    from onnxmtl.training import SearchConfig

    names = ("device", "threads", "precision", "latency_budget_ms")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if not overrides:
        return args.config
    base = SearchConfig.load(args.config).to_dict()
    return SearchConfig.from_dict({**base, **overrides}, "command line")


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path to an ONNX backbone")
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--tasks", help="YAML task list (default: the dataset's tasks)")
    _config_args(parser)
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--force", action="store_true", help="replace the run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _compile_args(parser: argparse.ArgumentParser) -> None:
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


def _model_args(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxmtl", description="Automated multi-task learning for ONNX vision backbones."
    )
    parser.add_argument("--version", action="version", version=f"onnxmtl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "inspect", help="summarise a backbone (ops, units, features) or a supermodel (.pt)"
    )
    _model_args(p)
    p.add_argument("--values", action="store_true", help="list every candidate feature map")
    p.add_argument("--tasks", help="YAML task list: summarise the supermodel for these tasks")
    _compile_args(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "latency",
        help="time every unit's branches with onnxruntime here (cached): the range of latency "
        "budgets a search can ask for",
    )
    _model_args(p)
    p.add_argument("--tasks", help="YAML task list (for an ONNX backbone)")
    _compile_args(p)
    p.add_argument("--provider", default="auto", help="auto, cpu, cuda or tensorrt")
    p.add_argument("--batch", type=int, default=1, help="batch size the latency is for")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT default)")
    p.add_argument("--cache", help="table folder (default $ONNXMTL_CACHE/latency)")
    p.set_defaults(func=cmd_latency)

    p = sub.add_parser("compile", help="build the multi-task supermodel and save it")
    _model_args(p)
    p.add_argument("--tasks", required=True, help="YAML file listing the tasks")
    p.add_argument("-o", "--output", default="supermodel.pt", help="file to write (.pt)")
    _compile_args(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("search", help="warm up, search the policy, derive, post-train")
    _run_args(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("train", help="train a baseline or post-train a given policy")
    _run_args(p)
    p.add_argument(
        "--baseline",
        default="all-shared",
        help="all-shared, single-task, random, own-last-K or skip-last-K (the last K units "
        "task-specific or skipped)",
    )
    p.add_argument("--policy", help="policy.json to post-train instead of a baseline")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("data", help="look at a dataset before training on it")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser(
        "check", help="counts, label histograms, value ranges and every bad file or label"
    )
    q.add_argument("source", help=DATA_HELP)
    q.add_argument("--tasks", help="YAML task list (default: the dataset's tasks)")
    q.add_argument("--size", type=int, help="image size to read a labelled folder at")
    q.set_defaults(func=cmd_data_check)

    p = sub.add_parser("eval", help="evaluate a finished run folder")
    p.add_argument("run_dir", help="folder written by search or train")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "run", help="compile, search, derive, post-train, export, bench and report in one go"
    )
    p.add_argument("model", help="path to an ONNX backbone")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--tasks", help="YAML task list (default: the dataset's tasks)")
    _config_args(p)
    p.add_argument("--out", required=True, help="run folder (an unfinished one is resumed)")
    p.add_argument(
        "--baselines",
        default="all-shared,single-task,last-k",
        help="baselines to train beside the search, comma-separated ('' for none): all-shared, "
        "single-task, last-k (own-last-1..3 and skip-last-1..3: the last units task-specific or "
        "skipped), random, random-matched (random, as many unshared pairs as the search's), "
        "all-shared-uncertainty; the best on validation is deployed",
    )
    p.add_argument("--batch-sizes", default="1,8", help="bench batch sizes (default 1,8)")
    p.add_argument("--force", action="store_true", help="redo a finished run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "quantize", help="a run's model (or an exported file) as static INT8, accuracy measured"
    )
    p.add_argument("target", help="a finished run folder, or an ONNX file onnxmtl exported")
    p.add_argument("--data", help="dataset to calibrate on and judge with (default: the run's)")
    p.add_argument("--model", help="which model of the run (default: the one it deploys)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="each task's largest loss against fp32, in %% of its metrics (default 1)",
    )
    p.add_argument("--count", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("demo", help="the bundled default: EfficientNet-Lite0 on fashion-locate")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--model", default="models/efficientnet_lite0.64.onnx")
    p.add_argument("--full", action="store_true", help="the GPU-sized run (all data, 10x steps)")
    p.add_argument("--force", action="store_true", help="redo a finished demo")
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads of torch and onnxruntime (0: all)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("derive", help="build the compact multi-task model a policy implies")
    p.add_argument("source", help="run folder (supermodel.pt + policy.json) or a supermodel .pt")
    p.add_argument(
        "--policy",
        help="policy.json, or 'shared' / 'specific' (default: the run's policy.json; for a "
        ".pt file: shared)",
    )
    p.add_argument("--task", action="append", help="keep only this task (repeat for several)")
    p.add_argument("-o", "--output", default="derived.pt", help="file to write (.pt)")
    p.set_defaults(func=cmd_derive)

    p = sub.add_parser("export", help="write a derived model as one ONNX graph")
    p.add_argument("derived", help="file written by onnxmtl derive")
    p.add_argument("-o", "--output", default="model.onnx", help="file to write (.onnx)")
    p.add_argument("--input-size", help="H,W; needed where the backbone's size is symbolic")
    p.add_argument(
        "--image-size",
        help="H,W of the images the model is to take, where they differ from the backbone's "
        "input (the size a run trained on): the graph resizes them first, as training did",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--batch", type=int, help="fix the batch size (default: dynamic)")
    p.add_argument(
        "--tolerance",
        type=float,
        help="max onnxruntime-PyTorch diff / output scale (default 1e-4; 1e-2 with --fp16)",
    )
    p.add_argument(
        "--fp16", action="store_true", help="compute in float16 (float32 input and outputs)"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="time ONNX models with onnxruntime, side by side")
    p.add_argument("models", nargs="+", help="ONNX files")
    p.add_argument("--batch-sizes", default="1", help="comma-separated (default 1)")
    p.add_argument(
        "--provider",
        default="auto",
        help="auto (CUDA if it loads), cpu, cuda or tensorrt (only when asked)",
    )
    p.add_argument(
        "--runtime",
        default="onnxruntime",
        choices=RUNTIMES,
        help="onnxruntime (default) or openvino (pip install 'onnxmtl[openvino]'; CPU, "
        "checked against onnxruntime before timing)",
    )
    p.add_argument(
        "--precision",
        default="f32",
        choices=OPENVINO_PRECISIONS,
        help="OpenVINO's inference precision hint (default f32; its CPU default is bf16)",
    )
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT default)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per model and batch")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per model and batch")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--reference", help="model the latency ratios divide by (default: first)")
    p.add_argument("--out", default="bench", help="folder for bench.json, bench.md and PNGs")
    p.add_argument("--json", action="store_true", help="print the JSON result")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("verify", help="check the lowered model against onnxruntime")
    _model_args(p)
    p.add_argument("--tolerance", type=float, default=1e-4, help="max diff / output scale")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.add_argument("--batch", type=int, help="batch of the random input (default 2)")
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if int(os.environ.get("RANK", 0)) > 0:  # under torchrun only rank 0 prints results
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OnnxMtlError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.debug:
            raise
        print(
            "error: out of memory; use smaller sizes (batch_size, data size, --batch-sizes).",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        how = "add --resume to the same command" if hasattr(args, "resume") else "run it again"
        again = f"; {how} to continue {out}" if out else ""
        print(f"interrupted{again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
