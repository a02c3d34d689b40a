"""The generated parts of the documentation, read from the code so that they cannot drift.

    .venv/bin/python tools/docs_gen.py config|errors|cli|evidence   # print one part
    .venv/bin/python tools/docs_gen.py readme    # rewrite README.md's evidence table

MkDocs runs this file as a hook (`hooks:` in mkdocs.yml): a page line `<!-- generated: NAME -->`
is replaced, at build time, by the part NAME (`PARTS`), and the pages benchmarks/evidence.py
wrote under docs/evidence/ join the navigation under Evidence. The parts:

- config: every field of every SearchConfig section (onnxmtl/training/config/sections.py),
  with its flat name, type, default and the `# comment` written beside it;
- errors: every one-line error onnxmtl raises (`raise SomeError(...)` in onnxmtl/), by stage,
  with the condition that raises it and what to do;
- cli: the `--help` of every `onnxmtl` command;
- evidence: the list of evidence pages under docs/evidence/.

`readme` rewrites the table between README.md's `<!-- evidence-table -->` markers from
docs/evidence/*.json (`make docs` runs it; tests/test_docs.py checks that it is current).
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import sys
import tokenize
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "onnxmtl"
DOCS = ROOT / "docs"
EVIDENCE = DOCS / "evidence"
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)
TABLE_START, TABLE_END = "<!-- evidence-table -->", "<!-- /evidence-table -->"

if str(ROOT) not in sys.path:  # run as a script or as a MkDocs hook
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- configuration reference


def field_comments(source: str, class_name: str) -> dict[str, str]:
    """The `# comment` of each field of dataclass `class_name` in `source`: the comments on
    the field's own lines, then the comment lines right after it, joined."""
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.ClassDef) and node.name == class_name):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            end = stmt.end_lineno or stmt.lineno
            parts = [comments[n] for n in range(stmt.lineno, end + 1) if n in comments]
            n = end + 1
            while n <= len(lines) and lines[n - 1].strip().startswith("#"):
                parts.append(comments.get(n, lines[n - 1].strip().lstrip("#").strip()))
                n += 1
            found[stmt.target.id] = " ".join(p for p in parts if p)
    return found


def _type_name(hint: Any) -> str:
    """A field's type in words: a Literal's choices, otherwise its annotation."""
    if typing.get_origin(hint) is typing.Literal:
        return " \\| ".join(f"`{v!r}`" for v in typing.get_args(hint))
    text = getattr(hint, "__name__", None) if isinstance(hint, type) else None
    text = text or str(hint).replace("typing.", "")
    return f"`{text}`"


def _default(f: Any) -> str:
    if f.default is not MISSING:
        return f"`{f.default!r}`"
    if f.default_factory is not MISSING:
        return f"`{f.default_factory()!r}`"
    return "required"


def config_fields() -> list[dict[str, str]]:
    """One row per SearchConfig field: section, field, flat name, type, default, comment."""
    from onnxmtl.training.config.check import flat_name
    from onnxmtl.training.config.flat import SECTIONS

    rows = []
    for section, cls in SECTIONS.items():
        source = Path(sys.modules[cls.__module__].__file__ or "").read_text()
        comments = field_comments(source, cls.__name__)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            least = f.metadata.get("at_least")
            rows.append(
                {
                    "section": section,
                    "field": f.name,
                    "flat": flat_name(f),
                    "type": _type_name(hints[f.name])
                    + (f", >= {least}" if least is not None else ""),
                    "default": _default(f),
                    "doc": comments.get(f.name, ""),
                }
            )
    return rows


def config_reference() -> str:
    """Markdown: per section its docstring and a table of its fields."""
    from onnxmtl.training.config.flat import SECTIONS

    rows = config_fields()
    out = []
    for section, cls in SECTIONS.items():
        doc = " ".join((cls.__doc__ or "").split())
        out += [
            f"### `{section}`",
            "",
            f"{doc} (`{cls.__module__}.{cls.__name__}`)",
            "",
            "| flat option | in the section | type | default | what it does |",
            "|---|---|---|---|---|",
        ]
        for row in (r for r in rows if r["section"] == section):
            doc_cell = row["doc"].replace("|", "\\|") or "-"
            out.append(
                f"| `{row['flat']}` | `{section}.{row['field']}` | {row['type']} | "
                f"{row['default']} | {doc_cell} |"
            )
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------- error reference

# Where each part of the package sits in the pipeline, in the order a run meets them.
STAGES = (
    ("cli.py", "Command line"),
    ("training/config", "Configuration"),
    ("ir", "Loading a backbone (`onnxmtl.load`, `inspect`, `verify`)"),
    ("lower", "Lowering to PyTorch"),
    ("tasks", "Tasks and heads"),
    ("compiler", "Compiling the supermodel, policies"),
    ("data", "Data"),
    ("training", "Training (warm-up, search, post-training)"),
    ("cost", "Costs and latency budgets"),
    ("derived", "Derive"),
    ("exporter", "Export"),
    ("benchmark", "Bench"),
    ("pipeline", "`run`, `search`, `train`, `demo` and the evidence"),
    ("run_folder", "Run folders"),
    ("io_utils.py", "Reading and writing files"),
    ("runtime.py", "onnxruntime sessions"),
)
# The error classes' causes and fixes, beyond what each message says.
FIXES = {
    "ConfigError": "An option, argument or YAML value is invalid: change the option the message "
    "names (the [configuration](configuration.md) page lists every option with its type, "
    "choices and default; `onnxmtl COMMAND --help` lists the arguments).",
    "DataError": "A dataset, folder, file or sample is missing or malformed: fix the file or "
    "sample the message names. For a folder, `onnxmtl data check DIR` lists every problem at "
    "once (see [data formats](data.md)).",
    "ModelFileError": "The ONNX file (or module) cannot be taken as a backbone: check the path, "
    "run `onnxmtl inspect MODEL.onnx`, and re-export as "
    "[bring your own backbone](backbones.md) shows where the message asks for it.",
    "FixedBatchError": "The file bakes a batch of 1 into its graph in a way load cannot free "
    "safely: re-export with a dynamic batch axis (e.g. `dynamic_axes={'input': {0: 'N'}}`), "
    "see [fixed-batch files](backbones.md#fixed-batch-files).",
    "UnsupportedOpError": "Some ops have no converter at their opset: re-export at another opset "
    "(17 is the safest) or register a converter (`onnxmtl.lower.register_converter`, see "
    "[extending](extending.md)).",
    "LoweringError": "A supported op uses an attribute value or a computed input the lowering "
    "cannot take: re-export the model as the message says (static shapes, other attribute), "
    "or register a converter for that op.",
    "FeatureError": "The feature map to cut the backbone at cannot be found: list the "
    "candidates with `onnxmtl inspect MODEL.onnx --values` and name one with `--features`.",
    "ShapeError": "A shape the pipeline needs is unknown: give `--input-shape N,C,H,W` "
    "(`input_shape=` in Python) or `--input-size H,W` for export.",
    "ExportMismatchError": "onnxruntime's output differs from PyTorch's beyond the tolerance, so "
    "nothing was written: look for ops that differ between the two, or raise `--tolerance` if "
    "the difference is expected (fp16).",
    "DynamicBatchError": "The export fails or differs on a batch other than the one it was "
    "traced with: the backbone's graph keeps that batch (LeViT's BatchNorm over batch and "
    "tokens). Export with a fixed batch (`--batch N`, `batch=N`); `run` does so by itself.",
    "OutputError": "A file cannot be written: make the folder writable, remove the folder in the "
    "way, or free disk space.",
    "RunFolderError": "The run folder cannot be used as asked: pick another `--out`, use "
    "`--resume` or `--force` as the message says, or wait for the process that holds it.",
    "TrainingError": "A loss or weight stopped being finite: lower the learning rate the message "
    "names, check the data (`onnxmtl data check`), or try `--precision fp32`.",
}
# Helpers that build and return an error for the caller to raise.
BUILDERS = {"unsupported_attr": "LoweringError", "refuse_choice": "ConfigError"}


def _error_classes() -> set[str]:
    from onnxmtl import errors

    return {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.OnnxMtlError)
    }


def _render(node: ast.expr) -> str:
    """A message's text with each computed part as `…`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _render(node.left) + _render(node.right)
    if isinstance(node, ast.Call):  # a helper that wraps a text: keep the texts it is given
        texts = [_render(a) for a in node.args if isinstance(a, ast.Constant | ast.JoinedStr)]
        return "…: " + "; ".join(texts) if texts else "…"
    return "…"


def _message(call: ast.Call, cls: str, builder: str | None) -> str:
    if cls == "UnsupportedOpError":
        return (
            "MODEL: N unsupported op(s): DOMAIN::OP-OPSET (nodes: …). Re-export the model with "
            "a different opset, or register a converter with onnxmtl.lower.register_converter."
        )
    if builder == "unsupported_attr" and len(call.args) >= 4:
        return f"node '…' (OP): {_render(call.args[1])}=… is not supported; {_render(call.args[3])}"
    if builder == "refuse_choice":
        return "config: OPTION=VALUE; expected one of CHOICES."
    return _render(call.args[0]) if call.args else ""


def _condition(parents: list[ast.AST], raise_node: ast.Raise) -> str:
    """What raises it, as source text: the nearest `if` whose body holds it, or the exception
    it turns into one line."""
    child: ast.AST = raise_node
    for parent in reversed(parents):
        if isinstance(parent, ast.If) and child in parent.body:
            return f"when `{_short(ast.unparse(parent.test))}`"
        if isinstance(parent, ast.If) and child in parent.orelse:
            return f"unless `{_short(ast.unparse(parent.test))}`"
        if isinstance(parent, ast.ExceptHandler):
            caught = ast.unparse(parent.type) if parent.type is not None else "any exception"
            return f"on `{_short(caught)}` from the code it calls"
        if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
            break
        child = parent
    return "where it is reached"


def _raises(
    node: ast.AST, parents: list[ast.AST], function: str, classes: set[str]
) -> list[dict[str, str]]:
    """The raises of onnxmtl errors under `node`: class, message, condition and line."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        function = node.name
    found = []
    if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
        name = ast.unparse(node.exc.func).split(".")[-1]
        builder = name if name in BUILDERS else None
        cls = BUILDERS.get(name, name)
        if cls in classes:
            found.append(
                {
                    "class": cls,
                    "message": _message(node.exc, cls, builder),
                    "condition": _condition(parents, node),
                    "line": f"{node.lineno} ({function})",
                }
            )
    for child in ast.iter_child_nodes(node):
        found += _raises(child, [*parents, node], function, classes)
    return found


def error_sites(package: Path = PACKAGE) -> list[dict[str, str]]:
    """Every `raise` of an onnxmtl error in `package`: stage, class, message, condition,
    file, line and function."""
    classes = _error_classes()
    sites = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        stage = next((title for prefix, title in STAGES if relative.startswith(prefix)), "Other")
        for site in _raises(ast.parse(path.read_text()), [], "", classes):
            line = site.pop("line")
            sites.append({"stage": stage, **site, "where": f"onnxmtl/{relative}:{line}"})
    return sites


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_reference() -> str:
    """Markdown: per stage, per error class, every message with what raises it."""
    sites = error_sites()
    out = []
    titles = [title for _, title in STAGES] + ["Other"]
    for title in titles:
        here = [s for s in sites if s["stage"] == title]
        if not here:
            continue
        out += [f"### {title}", ""]
        for cls in sorted({s["class"] for s in here}):
            out += [f"**{cls}**: {FIXES.get(cls, '')}", ""]
            seen: set[str] = set()
            for s in (s for s in here if s["class"] == cls):
                message = s["message"].replace("`", "'")
                key = message
                if key in seen:
                    continue
                seen.add(key)
                out.append(f"- `{message}`  \n  raised {s['condition']}, in `{s['where']}`")
            out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------- CLI reference


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, str]]:
    """(command, help text) of `parser` and of every subcommand under it."""
    found = [(prefix, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _subcommands(sub, f"{prefix} {name}")
    return found


def cli_commands() -> list[tuple[str, str]]:
    """Every `onnxmtl` command and subcommand with its `--help`, at 100 columns."""
    from onnxmtl.cli import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        return _subcommands(build_parser(), "onnxmtl")
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def cli_reference() -> str:
    out = []
    for command, text in cli_commands():
        out += [f"### `{command}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- evidence


def evidence_pages(folder: Path = EVIDENCE) -> list[Path]:
    """The evidence pages benchmarks/evidence.py wrote (NAME.md), sorted by name."""
    return sorted(folder.glob("*.md")) if folder.is_dir() else []


def evidence_list(folder: Path = EVIDENCE) -> str:
    pages = evidence_pages(folder)
    if not pages:
        return (
            "No evidence page has been generated at this commit yet: run "
            "`benchmarks/evidence.py` (below) to write one."
        )
    return "\n".join(f"- [{p.stem}](evidence/{p.name})" for p in pages)


def evidence_table(folder: Path = EVIDENCE) -> str:
    """README's results table, one row per docs/evidence/NAME.json: which seeds and which
    commit ran them (the summary's, on a page from before that was recorded), so a page from
    older code or reused seeds shows as such."""
    from onnxmtl.pipeline.evidence import Interval, mean_and_spread, runs_at

    lines = [
        "| task set | seeds | runs at | searched: test delta-m % (mean ± std) | searched − better "
        "of all-shared and last-k (test, 95% interval) | `run` deployed searched | page |",
        "|---|---|---|---|---|---|---|",
    ]
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in files:
        data = json.loads(path.read_text())
        seeds = data.get("seeds", [])
        test = data.get("methods", {}).get("searched", {}).get("test", {})
        searched = mean_and_spread(test) if "mean" in test and "std" in test else "-"
        gap = data.get("gaps", {}).get("searched - better of all-shared and last-k (on val)", {})
        interval = str(Interval(**gap["test"])) if gap.get("test") else "-"
        if "run_starts" in data:
            commit = runs_at(data["run_starts"])
        else:  # a page from before each seed's commit was recorded: the summary's
            commit = str(data.get("commit", "-"))[:7] + (" (dirty)" if data.get("dirty") else "")
            commit += " (the summary's)"
        lines.append(
            f"| {data.get('dataset', path.stem)} | {len(seeds)}: {', '.join(map(str, seeds))} | "
            f"{commit} | {searched} | "
            f"{interval} | {data.get('deployed_searched', '-')} of {len(seeds)} "
            f"| [docs/evidence/{path.stem}.md](docs/evidence/{path.stem}.md) |"
        )
    if not files:
        lines.append(
            "| fashion-locate | - | - | not generated yet | - | - | "
            "[docs/evidence/fashion-locate.md](docs/evidence/fashion-locate.md) |"
        )
    return "\n".join(lines)


def readme_with_table(text: str, folder: Path = EVIDENCE) -> str:
    """`text` (README.md) with the block between the evidence-table markers regenerated."""
    start, end = text.index(TABLE_START), text.index(TABLE_END)
    return text[: start + len(TABLE_START)] + "\n" + evidence_table(folder) + "\n" + text[end:]


# --------------------------------------------------------------------- benchmark results

BENCHMARKS = DOCS / "benchmarks"


def benchmark_results(folder: Path = BENCHMARKS) -> str:
    """Every result file a benchmark script wrote under docs/benchmarks/ (int8.py,
    runtimes.py, under_load.py, fixed_batch.py, training_length.py, selection_fidelity.py), as
    tables, each with the command, commit and machine that made it."""
    from onnxmtl.benchmark import BenchResult, to_markdown
    from onnxmtl.pipeline.quantize_run import quantize_table

    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        return "No benchmark result has been written at this commit yet."
    parts = []
    for path in files:
        record = json.loads(path.read_text())
        parts.append(
            f"### `{path.name}`\n\n`{record['command']}` at commit `{record['commit'][:10]}`, "
            f"{record['machine']}, {record['written']}.\n"
        )
        results = record["results"]
        if isinstance(results, dict) and "cases" in results:  # under_load.py
            parts.append(_under_load_table(results))
        elif isinstance(results, dict) and "rows" in results:  # rows of a table
            parts.append(_rows_table(results["rows"]))
        elif isinstance(results, list):  # int8.py: one quantisation per model and tolerance
            for row in results:
                parts.append(
                    f"**{row['model']}, tolerance {row['tolerance']:g}%**\n\n"
                    f"{quantize_table(row)}\n"
                )
        else:  # runtimes.py: one bench result per runtime
            for label, result in results.items():
                table = to_markdown(BenchResult.from_dict(result))
                parts.append(f"**{label}**\n\n{table}\n")
    return "\n".join(parts)


def _rows_table(rows: list[dict[str, Any]]) -> str:
    """A table of `rows`, their keys as the header."""
    header = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _under_load_table(results: dict[str, Any]) -> str:
    """under_load.py's median search step alone and beside a second search, per setting."""
    rows = [
        "| threads | alone (ms) | beside another (ms) | slowdown |",
        "|---|---|---|---|",
    ]
    for setting, case in results["cases"].items():
        beside = " / ".join(f"{t:.0f}" for t in case["beside_another_ms"])
        rows.append(f"| {setting} | {case['alone_ms']:.0f} | {beside} | {case['slowdown']:.2f}x |")
    ratio = results["shared_alone_vs_pinned_alone"]
    return "\n".join(rows) + f"\n\nShared alone against pinned alone: {ratio:.2f}x.\n"


# ------------------------------------------------------------------------ MkDocs hooks

PARTS = {
    "config": config_reference,
    "errors": error_reference,
    "cli": cli_reference,
    "evidence": evidence_list,
    "benchmarks": benchmark_results,
}


def on_config(config: Any) -> Any:
    """Add the evidence pages that exist to the navigation, under Evidence."""
    docs = Path(config["docs_dir"])
    pages = [{p.stem: f"evidence/{p.name}"} for p in evidence_pages(docs / "evidence")]
    nav = config.get("nav") or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and "Evidence" in item and isinstance(item["Evidence"], str):
            nav[i] = {"Evidence": [{"Protocol": item["Evidence"]}, *pages]} if pages else item
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each `<!-- generated: NAME -->` line by the part NAME."""

    def part(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PARTS:
            raise KeyError(f"{page.file.src_path}: no generated part {name!r}")
        return PARTS[name]()

    return MARKER.sub(part, markdown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=[*PARTS, "readme"])
    args = parser.parse_args()
    if args.part == "readme":
        README.write_text(readme_with_table(README.read_text()))
        print(f"wrote the evidence table of {README.relative_to(ROOT)}")
    else:
        print(PARTS[args.part]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
