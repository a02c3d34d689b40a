"""Command line: thin commands that gather arguments and call the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from onnxmtl.errors import ConfigError, OnnxMtlError, op_label
from onnxmtl.version import __version__

DATA_HELP = "multi-fashion, fashion-locate, scenes, or a dataset folder"


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
    from onnxmtl.ir.features import feature_maps
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
        maps = feature_maps(graph.graph)
        if args.json:
            print(json.dumps([{"name": n, "shape": list(s)} for n, s in maps]))
        else:
            for name, shape in maps:
                print(f"{name}  {shape}")
        return 0
    graph = _load(args)
    unsupported = find_unsupported(graph)
    info = {
        "model": graph.source,
        "producer": graph.producer,
        "opset": graph.opset,
        "ir_version": graph.ir_version,
        "input": {"name": graph.input_name, "shape": list(graph.input_shape)},
        "batch": _batch_text(graph),
        "outputs": [{"name": n, "shape": list(s or ())} for n, s in graph.original_outputs],
        "nodes": sum(graph.original_op_counts.values()),
        "nodes_after_cut": len(graph.nodes),
        "ops": graph.original_op_counts,
        "units": len(graph.units),
        "params": graph.params,
        "macs": graph.macs,
        "normalization": graph.normalization,
        "adaptations": graph.adaptations,
        "features": [
            {"name": n, "shape": list(s)} for n, s in zip(graph.features, graph.feature_shapes)
        ],
        "unsupported": [
            {"domain": d or "ai.onnx", "op": op, "opset": v, "nodes": nodes}
            for d, op, v, nodes in unsupported
        ],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    norm_text = {
        "present": "present (BatchNorm/LayerNorm nodes kept: the backbone can train as is)",
        "partial": "partial (some units carry a normalisation)",
        "folded": "absent (folded into the convolutions or decomposed)",
        "none": "none (no linear units)",
    }[graph.normalization]
    print(f"model          {graph.source}")
    print(f"producer       {graph.producer or '-'}   opset {graph.opset}   IR {graph.ir_version}")
    print(f"input          {graph.input_name} {graph.input_shape}")
    print(f"batch          {info['batch']}")
    for name, shape in graph.original_outputs:
        print(f"output         {name} {shape}")
    print(f"nodes          {info['nodes']} ({len(graph.nodes)} after normalising and cutting)")
    ops = ", ".join(f"{op} {n}" for op, n in graph.original_op_counts.items())
    print(f"ops            {ops}")
    print(
        f"units          {len(graph.units)}   params {graph.params:,}   "
        f"MACs {graph.macs / 1e6:,.1f} M per sample"
    )
    print(f"normalisation  {norm_text}")
    for line in graph.adaptations:
        print(f"adapted        {line}")
    for name, shape in zip(graph.features, graph.feature_shapes):
        print(f"features       {name} {shape}")
    if unsupported:
        for d, op, v, nodes in unsupported:
            print(f"unsupported    {op_label(d, op, v)}: {', '.join(nodes[:5])}")
    else:
        print("unsupported    none")
    return 0


def _batch_text(graph) -> str:
    if graph.batch_made_dynamic:
        return "fixed at 1 in the file, made dynamic (checked on onnxruntime)"
    return "fixed in the file" if graph.static_batch else "dynamic"


def cmd_verify(args: argparse.Namespace) -> int:
    from onnxmtl.lower.verify import verify

    graph = _load(args)
    shape = _input_shape(args.input_shape)
    batch = args.batch or (shape[0] if shape else 2)
    result = verify(graph, batch=batch, seed=args.seed, tolerance=args.tolerance)
    info = {
        "model": graph.source,
        "ok": result.ok,
        "max_abs_diff": result.max_abs_diff,
        "max_rel_diff": result.max_rel_diff,
        "tolerance": result.tolerance,
        "input_shape": list(result.input_shape),
        "units": len(graph.units),
        "params": graph.params,
        "features": graph.features,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        verdict = "OK" if result.ok else "MISMATCH"
        print(
            f"{verdict}: {graph.source}  max abs diff {result.max_abs_diff:.3g}  "
            f"max rel diff {result.max_rel_diff:.3g} (tolerance {result.tolerance:g})  "
            f"units {len(graph.units)}  params {graph.params:,}  "
            f"features {', '.join(graph.features)}"
        )
    return 0 if result.ok else 1


def cmd_compile(args: argparse.Namespace) -> int:
    from onnxmtl.compiler import save_supermodel, summarize

    model = _compile(args)
    save_supermodel(model, args.output)
    info = summarize(model)
    if args.json:
        print(json.dumps({"output": args.output, **info}, indent=2))
        return 0
    p = info["params"]
    print(
        f"wrote {args.output}: {len(model.tasks)} tasks, {info['num_units']} units "
        f"({info['renormalized']} re-normalised, calibration {info['calibration']}), "
        f"{p['total']:,} parameters; `onnxmtl inspect {args.output}` lists the branches"
    )
    return 0


def _print_metrics(metrics: dict, title: str) -> None:
    print(title)
    for task, values in metrics.items():
        text = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"  {task:<12} {text}")


def cmd_search(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline.runs import search

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
        _print_metrics(metrics, f"{split}:")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline.runs import train_baseline

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
            _print_metrics(metrics, f"{name} {split}:")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from collections import Counter
    from pathlib import Path

    from onnxmtl.data import load_dataset
    from onnxmtl.data.labelled_folder import LabelledFolder, is_labelled_folder
    from onnxmtl.data.summary import summarize
    from onnxmtl.errors import DataError
    from onnxmtl.tasks import load_tasks

    options = {"size": args.size} if args.size else {}
    problems: list[tuple[str, str]] = []
    for split in ("train", "test"):
        if is_labelled_folder(Path(args.source)):
            dataset = LabelledFolder(args.source, split, strict=False, **options)
            problems += dataset.problems
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

    metrics = evaluate_run(args.run_dir, args.split)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics(metrics, f"{args.run_dir} ({args.split}):")
    return 0


def _sizes(text: str | None, option: str, count: int | None = None) -> list[int] | None:
    if text is None:
        return None
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

    source = Path(args.source)
    run_dir = source.is_dir()
    supermodel = load_supermodel(source / "supermodel.pt" if run_dir else source)
    policy = args.policy or (str(source / "policy.json") if run_dir else "shared")
    if policy in ("shared", "specific"):
        chosen = supermodel.uniform_policy(SHARED if policy == "shared" else SPECIFIC)
    else:
        chosen = Policy.for_model(policy, supermodel)
    model = derive(supermodel, chosen, args.task)
    save_derived(model, supermodel, args.output)
    counts = model.branch_counts()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {args.output}: tasks {', '.join(model.task_names)}; {counts['shared']} shared, "
        f"{counts['specific']} task-specific, {counts['skip']} projection-skip blocks; "
        f"{params:,} parameters; `onnxmtl export {args.output} -o model.onnx` writes the ONNX"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from onnxmtl.derived import load_derived
    from onnxmtl.exporter import export

    report = export(
        load_derived(args.derived),
        args.output,
        input_size=_sizes(args.input_size, "--input-size", 2),
        opset=args.opset,
        tolerance=args.tolerance,
        batch=args.batch,
        fp16=args.fp16,
    )
    print(
        f"wrote {report.path} ({report.precision}): outputs "
        f"{', '.join(report.outputs)}; opset {report.opset}, IR {report.ir_version}; "
        f"{report.conv_nodes} Conv nodes; onnxruntime vs PyTorch max diff "
        f"{report.max_abs_diff:.3g} "
        f"({report.max_rel_diff:.3g} of the output scale, tolerance {report.tolerance:g})"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from onnxmtl.benchmark import bench, latency_bars, policy_heatmap, to_markdown
    from onnxmtl.io_utils import atomic_write_text

    paths = [Path(m) for m in args.models]
    names = [p.stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.stem}" for p in paths]
    result = bench(
        dict(zip(names, paths)),
        batch_sizes=_sizes(args.batch_sizes, "--batch-sizes"),
        provider=args.provider,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        memory=not args.no_memory,
    )
    table = to_markdown(result, args.reference)
    out = Path(args.out)
    atomic_write_text(out / "bench.json", json.dumps(result, indent=1))
    atomic_write_text(out / "bench.md", table + "\n")
    latency_bars(result, out / "latency.png")
    plots = ["latency.png"]
    for name, info in result["models"].items():
        if info["policy"]:
            plot = f"policy_{name.replace('/', '_')}.png"
            policy_heatmap(info["policy"], out / plot, title=f"{name}: policy")
            plots.append(plot)
    print(json.dumps(result, indent=1) if args.json else table)
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
        demo(args.out, args.model, args.full, args.force, progress=not args.no_progress)
    )


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of SearchConfig options")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (overrides the config's device)")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
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

    names = ("device", "precision", "latency_budget_ms")
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
        choices=["grouped", "full"],
        default="grouped",
        help="skip of a unit that changes shape: grouped 1x1 (cheap) or full 1x1 (AutoMTL)",
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
    p.add_argument("--baseline", default="all-shared", help="all-shared, single-task or random")
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
        default="all-shared,single-task",
        help="baselines to train: all-shared, single-task (comma-separated; '' for none)",
    )
    p.add_argument("--batch-sizes", default="1,8", help="bench batch sizes (default 1,8)")
    p.add_argument("--force", action="store_true", help="redo a finished run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the bundled default: EfficientNet-Lite0 on fashion-locate")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--model", default=".cache/models/efficientnet_lite0.64.onnx")
    p.add_argument("--full", action="store_true", help="the GPU-sized run (all data, 10x steps)")
    p.add_argument("--force", action="store_true", help="redo a finished demo")
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
