"""The `onnxmtl` argument parser: every command, its options and the function it runs."""

from __future__ import annotations

import argparse

from onnxmtl.choices import OPENVINO_PRECISIONS, RUNTIMES
from onnxmtl.cli.arguments import DATA_HELP, compile_args, config_args, model_args, run_args
from onnxmtl.cli.model_commands import (
    cmd_bench,
    cmd_compile,
    cmd_derive,
    cmd_export,
    cmd_inspect,
    cmd_latency,
    cmd_quantize,
    cmd_verify,
)
from onnxmtl.cli.run_commands import (
    cmd_data_check,
    cmd_demo,
    cmd_eval,
    cmd_run,
    cmd_search,
    cmd_train,
)
from onnxmtl.version import __version__


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
    model_args(p)
    p.add_argument("--values", action="store_true", help="list every candidate feature map")
    p.add_argument("--tasks", help="YAML task list: summarise the supermodel for these tasks")
    compile_args(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "latency",
        help="time every unit's branches with onnxruntime here (cached): the range of latency "
        "budgets a search can ask for",
    )
    model_args(p)
    p.add_argument("--tasks", help="YAML task list (for an ONNX backbone)")
    compile_args(p)
    p.add_argument("--provider", default="auto", help="auto, cpu, cuda or tensorrt")
    p.add_argument("--batch", type=int, default=1, help="batch size the latency is for")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT default)")
    p.add_argument("--cache", help="table folder (default $ONNXMTL_CACHE/latency)")
    p.set_defaults(func=cmd_latency)

    p = sub.add_parser("compile", help="build the multi-task supermodel and save it")
    model_args(p)
    p.add_argument("--tasks", required=True, help="YAML file listing the tasks")
    p.add_argument("-o", "--output", default="supermodel.pt", help="file to write (.pt)")
    compile_args(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("search", help="warm up, search the policy, derive, post-train")
    run_args(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("train", help="train a baseline or post-train a given policy")
    run_args(p)
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
    config_args(p)
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
    model_args(p)
    p.add_argument("--tolerance", type=float, default=1e-4, help="max diff / output scale")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.add_argument("--batch", type=int, help="batch of the random input (default 2)")
    p.set_defaults(func=cmd_verify)
    return parser
