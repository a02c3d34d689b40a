"""The documentation: the MkDocs site builds with --strict, its generated parts cover the code
(every config field, every raised error, every command), the runnable blocks run, and the
README keeps to its house rules."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from onnxmtl.cli import build_parser
from onnxmtl.pipeline.evidence import summarize
from onnxmtl.training.config.flat import FLAT
from tests.conftest import ROOT, load_script

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))  # docs/evidence/ is written by a benchmark
RUNNABLE = re.compile(r"<!-- runnable -->\s*```python\n(.*?)```", re.S)


docs_gen = load_script("tools/docs_gen.py")


def test_the_site_builds_strict_with_every_generated_part(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    configuration = (site / "configuration" / "index.html").read_text()
    for flat, (section, name) in FLAT.items():
        assert f"<code>{flat}</code>" in configuration, flat
        assert f"<code>{section}.{name}</code>" in configuration, (section, name)
    assert "generated:" not in configuration  # every marker was replaced
    cli = (site / "cli" / "index.html").read_text()
    assert all(f"usage: {command}" in cli for command, _ in docs_gen.cli_commands())
    errors = (site / "troubleshooting" / "index.html").read_text()
    listed = errors.count(", in <code>onnxmtl/")
    assert listed >= len({s["message"] for s in docs_gen.error_sites()}) > 100
    assert (site / "api" / "index.html").read_text().count('id="onnxmtl.run"') == 1


def test_every_config_field_is_on_the_configuration_page():
    page = docs_gen.config_reference()
    rows = docs_gen.config_fields()
    assert {r["flat"] for r in rows} == set(FLAT)
    for row in rows:
        assert f"| `{row['flat']}` | `{row['section']}.{row['field']}` |" in page
    documented = {r["flat"]: r["doc"] for r in rows}
    # a field's comment runs on over the following comment lines
    assert documented["search_mode"].startswith("'soft' (every branch computed")
    assert documented["search_mode"].endswith("(AutoMTL's: one sampled branch, straight-through)")
    assert documented["data"] == "the dataset's own options (count, size), given to its factory"


def test_every_raised_error_is_on_the_troubleshooting_page():
    """The scan finds every raise of an onnxmtl error that a plain text search finds."""
    classes = docs_gen._error_classes() | set(docs_gen.BUILDERS)
    pattern = re.compile(r"raise\s+(\w+)\(")
    expected = 0
    for path in (ROOT / "onnxmtl").rglob("*.py"):
        expected += sum(m.group(1) in classes for m in pattern.finditer(path.read_text()))
    sites = docs_gen.error_sites()
    assert len(sites) == expected
    page = docs_gen.error_reference()
    for site in sites:
        assert site["message"].replace("`", "'") in page
        assert site["class"] in docs_gen.FIXES
    assert "config: device=…; expected 'cpu', 'cuda' or 'cuda:N' (N a device index from 0)." in page


def test_the_readme_command_synopsis_matches_the_parser():
    """Every command the parser has is in the README's synopsis, and every option the
    synopsis shows exists on its command."""
    text = README.read_text()
    synopsis = text[text.index("## Command line") :]
    synopsis = synopsis[synopsis.index("```text\n") : synopsis.index("```\n\n")]
    commands = {name: sub for name, sub in _subparsers(build_parser()).items()}
    entries: dict[str, list[str]] = {}
    current = None
    for line in synopsis.splitlines()[1:]:
        words = line.split()
        if line.startswith("onnxmtl "):
            current = " ".join(words[1:3]) if words[1] == "data" else words[1]
            entries[current] = []
        assert current is not None
        entries[current] += re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line)
    assert set(entries) == set(commands)
    for command, options in entries.items():
        known = {o for action in commands[command]._actions for o in action.option_strings}
        assert set(options) <= known, (command, set(options) - known)


def _subparsers(parser, prefix: str = "") -> dict:
    found = {}
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                nested = _subparsers(sub, f"{prefix}{name} ")
                found.update(nested or {f"{prefix}{name}": sub})
    return found


def test_the_readme_keeps_its_house_rules():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    quick = text[text.index("## Quick start") :]
    quick = quick[: quick.index("\n## ", 1)]
    block = re.search(r"```bash\n(.*?)```", quick, re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    for marker in ("<!-- api-example -->", docs_gen.TABLE_START, docs_gen.TABLE_END):
        assert marker in text


@pytest.mark.parametrize("path", [README, ROOT / "CHANGELOG.md", *PAGES], ids=lambda p: p.name)
def test_links_resolve(path):
    """Relative links point at files that exist (the evidence pages excepted: a benchmark
    writes them)."""
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target or target.startswith("docs/evidence/"):
            continue
        assert (path.parent / target).exists(), f"{path.name}: {target}"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_the_docs_read_as_reference_not_as_a_notebook(path):
    text = path.read_text()
    assert not re.findall(r"\b\d{1,2}:\d{2}\b", text), "a clock time"
    assert not re.findall(r"\b[Ii]ssue \d+", text), "an issue number"


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in [README, *PAGES]:
        for i, code in enumerate(RUNNABLE.findall(path.read_text())):
            found.append((f"{path.name}-{i}", code))
    return found


def test_there_are_runnable_blocks():
    names = [name for name, _ in _blocks()]
    # extending.md shows one per extension point; the README the converter, head and dataset
    assert sum(n.startswith("README") for n in names) == 3
    assert sum(n.startswith("extending") for n in names) == 5


@pytest.fixture
def registries():
    """The extension registries, restored after a block registered into them."""
    from onnxmtl.cost.registry import COSTS
    from onnxmtl.data.registry import DATASETS
    from onnxmtl.lower.registry import _REGISTRY
    from onnxmtl.tasks.heads import HEADS
    from onnxmtl.training.weighting import WEIGHTINGS

    saved = [(r, dict(r)) for r in (COSTS, DATASETS, _REGISTRY, HEADS, WEIGHTINGS)]
    yield
    for registry, before in saved:
        registry.clear()
        registry.update(before)


@pytest.mark.parametrize(("name", "code"), _blocks(), ids=[n for n, _ in _blocks()])
def test_runnable_blocks_run(name, code, registries, tmp_path, monkeypatch):
    ast.parse(code)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})


def test_the_readme_evidence_table_is_current():
    """`make docs` regenerates it from docs/evidence/*.json; run it after new evidence."""
    text = README.read_text()
    assert docs_gen.readme_with_table(text) == text, "run `make docs` to regenerate it"


def _run(seed: int, searched: float) -> dict:
    def entry(value: float) -> dict:
        return {
            "val_metrics": {"t": {"accuracy": value}},
            "metrics": {"t": {"accuracy": value + 0.01}},
            "param_share": 0.5,
        }

    methods = {"searched": entry(searched), "all-shared": entry(0.5), "single-task": entry(0.6)}
    methods.update({name: entry(0.4) for name in ("own-last-1", "skip-last-1")})
    return {
        "methods": methods,
        "deploy": {"model": "searched"},
        "policy": {"counts": {"shared": 1, "specific": 1, "skip": 0}, "choices": [[0, 1]]},
    }


def test_evidence_pages_reach_the_readme_table_and_the_navigation(tmp_path):
    """A page as benchmarks/evidence.py writes it gives a README row and a nav entry."""
    evidence = tmp_path / "docs" / "evidence"
    evidence.mkdir(parents=True)
    summary = summarize({100: _run(100, 0.7), 101: _run(101, 0.65), 102: _run(102, 0.68)})
    record = {"dataset": "toy", "config": {}, "commit": "0123456789abcdef", **summary}
    (evidence / "toy.json").write_text(json.dumps(record))
    (evidence / "toy.md").write_text("# Evidence: toy\n")
    table = docs_gen.evidence_table(evidence)
    row = table.splitlines()[-1]
    assert row.startswith("| toy | 3: 100, 101, 102 | 0123456 (the summary's) | +")
    assert "of 3 |" in row
    starts = {"100": [{"commit": "abcdef0123", "dirty": False}], "101": [], "102": []}
    (evidence / "toy.json").write_text(json.dumps({**record, "run_starts": starts}))
    row = docs_gen.evidence_table(evidence).splitlines()[-1]
    assert "| `abcdef0` (seed 100); not recorded (seeds 101, 102) |" in row
    assert "[docs/evidence/toy.md](docs/evidence/toy.md)" in row
    assert "not generated" in docs_gen.evidence_table(tmp_path / "none")
    config = {"docs_dir": str(tmp_path / "docs"), "nav": [{"Evidence": "evidence.md"}]}
    nav = docs_gen.on_config(config)["nav"]
    assert nav == [{"Evidence": [{"Protocol": "evidence.md"}, {"toy": "evidence/toy.md"}]}]
    assert "evidence/toy.md" in docs_gen.evidence_list(evidence)


def test_benchmark_results_are_rendered_from_the_files_the_scripts_write(tmp_path, tiny_export):
    from onnxmtl.benchmark import bench

    timing = bench([tiny_export("legacy17")], repeats=2, memory=False)
    meta = {"command": "c", "commit": "0123456789abc", "machine": "m", "written": "w"}
    (tmp_path / "runtimes.json").write_text(
        json.dumps({**meta, "results": {"onnxruntime": timing.to_dict()}})
    )
    quantized = {
        "model": "searched",
        "tolerance": 1.0,
        "path": "RUN/models/searched.int8.onnx",
        "excluded": ["conv0"],
        "fp32": {"item": {"accuracy": 0.8}},
        "int8": {"item": {"accuracy": 0.79}},
        "deltas": {"item": -1.25},
        "within": False,
        "latency_p50_ms": {"1": {"fp32": 2.0, "int8": 1.0}},
    }
    (tmp_path / "int8.json").write_text(json.dumps({**meta, "results": [quantized]}))
    page = docs_gen.benchmark_results(tmp_path)
    assert page.index("`int8.json`") < page.index("`runtimes.json`")
    assert (
        "| item | accuracy | 0.8 | 0.79 | -1.25 |" in page
        and "| 1 | 2.000 | 1.000 | 2.00x |" in page
    )
    assert "NOT within 1% of fp32" in page and "at commit `0123456789`" in page
    assert "**onnxruntime**" in page and "| tiny.legacy17 | 1 |" in page
