"""One module per run of a shared branch: the graph export traces."""

from __future__ import annotations

import copy

from torch import fx

from onnxmtl.compiler.branches import one_row
from onnxmtl.derived.model import DerivedModel


def one_module_per_run(model: DerivedModel) -> fx.GraphModule:
    """A copy of `model` in which every run of a shared branch calls a module of its own,
    holding the run's BatchNorm statistics as a plain BatchNorm, and which returns the task
    outputs as a tuple in task order: what export traces, so that each normalisation folds
    into its convolution as in any backbone and each output gets its task's name."""
    copied = copy.deepcopy(model)
    graph = copied.graph
    runs: dict[str, int] = {}
    for node in graph.nodes:
        rows = node.kwargs.get("rows") if node.op == "call_module" else None
        if rows is None:
            continue
        target = str(node.target)
        runs[target] = runs.get(target, 0) + 1
        name = f"{target}_run{runs[target]}"
        branch = copy.deepcopy(copied.get_submodule(target))
        copied.add_submodule(name, one_row(branch, rows[0]))
        node.target, node.kwargs = name, {}
    output = graph.output_node()
    results = output.args[0]
    assert isinstance(results, dict)  # derive returns the outputs by task name
    output.args = (tuple(results[name] for name in model.task_names),)
    return fx.GraphModule(copied, graph, class_name="DerivedModelForExport")
