"""Commands that train or read a run: search, train, data check, eval, run, demo."""

from __future__ import annotations

import argparse
import json
import sys

from onnxmtl.cli.arguments import parse_sizes, search_config


def cmd_search(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline.stages import search
    from onnxmtl.tasks import format_metrics

    result = search(
        args.model,
        args.data,
        args.out,
        args.tasks,
        search_config(args),
        resume=args.resume,
        force=args.force,
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
    from onnxmtl.pipeline.stages import train_baseline
    from onnxmtl.tasks import format_metrics

    results = train_baseline(
        args.model,
        args.data,
        args.out,
        args.baseline,
        args.tasks,
        search_config(args),
        args.policy,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
    )
    for name, result in results.items():
        for split, metrics in result.metrics.items():
            print(format_metrics(metrics, f"{name} {split}:"))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from onnxmtl.data.checkup import check_source

    check = check_source(args.source, args.tasks, args.size)
    for line in check.lines:
        print(line)
    for kind, message in check.problems:
        print(f"problem ({kind}): {message}")
    if check.ok:
        print(f"ok: {args.source} can be trained on")
        return 0
    for kind, count in check.counts().items():
        print(
            f"error: {args.source}: {count} x {kind} (listed above); fix or remove those files "
            "and check again.",
            file=sys.stderr,
        )
    return 2


def cmd_eval(args: argparse.Namespace) -> int:
    from onnxmtl.pipeline.stages import evaluate_run
    from onnxmtl.tasks import format_metrics

    metrics = evaluate_run(args.run_dir, args.split)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_metrics(metrics, f"{args.run_dir} ({args.split}):"))
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
        search_config(args),
        baselines=tuple(b for b in args.baselines.split(",") if b),
        batch_sizes=tuple(parse_sizes(args.batch_sizes, "--batch-sizes")),
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
            full=args.full,
            force=args.force,
            progress=not args.no_progress,
            threads=args.threads,
        )
    )
