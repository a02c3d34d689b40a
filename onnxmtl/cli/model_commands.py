"""Commands on one model: inspect, latency, verify, compile, derive, export, quantize, bench."""

from __future__ import annotations

import argparse
import json
import sys

from onnxmtl.cli.arguments import compile_model, load_graph, parse_input_shape, parse_sizes
from onnxmtl.errors import ConfigError


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
        model = compile_model(args)
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
        _print_supermodel(compile_model(args), args.json)
        return 0
    if args.values:
        graph = load_graph(args, whole_graph=True)
        if args.json:
            print(json.dumps(summarize_values(graph)))
        else:
            print(describe_values(graph), end="")
        return 0
    graph = load_graph(args)
    unsupported = find_unsupported(graph)
    if args.json:
        print(json.dumps(summarize(graph, unsupported), indent=2))
    else:
        print(describe(graph, unsupported))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from onnxmtl.lower.verify import describe_verification, summarize_verification, verify

    graph = load_graph(args)
    shape = parse_input_shape(args.input_shape)
    batch = args.batch or (shape[0] if shape else 2)
    result = verify(graph, batch=batch, seed=args.seed, tolerance=args.tolerance)
    if args.json:
        print(json.dumps(summarize_verification(graph, result), indent=2))
    else:
        print(describe_verification(graph, result))
    return 0 if result.ok else 1


def cmd_compile(args: argparse.Namespace) -> int:
    from onnxmtl.compiler import describe_totals, save_supermodel, summarize

    model = compile_model(args)
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
        input_size=None
        if args.input_size is None
        else parse_sizes(args.input_size, "--input-size", 2),
        opset=args.opset,
        tolerance=args.tolerance,
        batch=args.batch,
        fp16=args.fp16,
        image_size=None
        if args.image_size is None
        else parse_sizes(args.image_size, "--image-size", 2),
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
        batch_sizes=parse_sizes(args.batch_sizes, "--batch-sizes"),
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
